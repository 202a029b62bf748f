"""The manifests the README's cluster quickstart applies are valid against the real API."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.cluster


def test_gpu_free_quickstart_manifests_pass_server_side_validation(cluster):
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.wait_until("CRDs established", lambda: "rolloutjobs" in cluster.kubectl("api-resources").stdout)
    ns = cluster.new_namespace("quickstart")
    try:
        for name, files in [("quickstart-tokenizer", ["tokenizer.json", "tokenizer_config.json"])]:
            cluster.kubectl("create", "configmap", name, "-n", ns,
                            *[f"--from-file={REPO / 'examples' / 'tiny-model' / f}" for f in files])
        cluster.kubectl("create", "configmap", "quickstart-data", "-n", ns,
                        f"--from-file={REPO / 'examples' / 'data' / 'arith_train.jsonl'}")
        out = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(REPO / "examples" / "k8s" / "gpu-free"))
        for kind in ("persistentvolumeclaim/quickstart-output", "sglangpool.kuberollout.io/sim-pool",
                     "rolloutjob.kuberollout.io/sim-quickstart"):
            assert kind in out.stdout
    finally:
        cluster.delete_namespace(ns)


def test_gpu_free_job_spec_builds_a_runtime_config():
    """The job's sections are what the runtime reads: they must form a valid RolloutConfig."""
    import yaml

    from rollout_runtime.config import RolloutConfig

    job = yaml.safe_load((REPO / "examples" / "k8s" / "gpu-free" / "rolloutjob.yaml").read_text())
    sections = {k: v for k, v in job["spec"].items() if k in ("dataset", "rollout", "reward", "filters", "eval", "output")}
    args = RolloutConfig.from_sections(sections)
    assert args.partial_rollout and args.continuous_refill and args.hf_checkpoint == "/tokenizer"
