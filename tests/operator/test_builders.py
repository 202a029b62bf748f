"""Manifest builders: what the operator creates, checked field by field (no cluster)."""

from __future__ import annotations

from typing import Any

from rollout_operator.api.rolloutjob_types import RolloutJob
from rollout_operator.api.sglangpool_types import SGLangPool
from rollout_operator.builders import rolloutjob as jb
from rollout_operator.builders import sglangpool as pb
from rollout_operator.builders.common import hash_of, spec_hash
from rollout_operator.constants import ANN_SPEC_HASH
from rollout_operator.settings import OperatorConfig

from rollout_runtime.contract import ATTEMPT_ANNOTATION as ANN_ATTEMPT

from tests.operator.conftest import rolloutjob, sglangpool


def typed_pool(body: dict[str, Any]) -> SGLangPool:
    """The builders take the resource parsed once per reconcile."""
    return SGLangPool.from_body(body)


def typed_job(body: dict[str, Any]) -> RolloutJob:
    return RolloutJob.from_body(body)


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    return deploy["spec"]["template"]["spec"]["containers"][0]


# ---------------------------------------------------------------------------------- pool


def test_server_deployment(config: OperatorConfig) -> None:
    body = sglangpool(replicas=3, gpusPerReplica=4, extraArgs=["--mem-fraction-static", "0.85"], shmSize="32Gi",
                      scheduling={"nodeSelector": {"gpu": "h100"}, "priorityClassName": "high",
                                  "schedulerName": "volcano",
                                  "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]},
                      resources={"requests": {"cpu": 8, "memory": "64Gi"}})
    d = pb.server_deployment(typed_pool(body), config)
    c = container(d)
    assert d["metadata"]["name"] == "qwen-server" and d["spec"]["replicas"] == 3
    assert d["metadata"]["ownerReferences"][0]["uid"] == "uid-qwen"
    assert c["image"] == "sglang:test"
    assert c["command"] == ["python3", "-m", "sglang.launch_server"]
    args = c["args"]
    assert args[args.index("--model-path") + 1] == "Qwen/Qwen3-8B"
    assert args[args.index("--tp-size") + 1] == "4"
    assert args[args.index("--host") + 1] == "0.0.0.0" and args[args.index("--port") + 1] == "30000"
    assert args[-2:] == ["--mem-fraction-static", "0.85"]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 4 == c["resources"]["limits"]["nvidia.com/gpu"]
    assert c["resources"]["requests"]["cpu"] == 8
    pod = d["spec"]["template"]["spec"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in c["volumeMounts"]
    assert c["startupProbe"]["httpGet"]["path"] == "/health_generate"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health_generate"
    # Liveness never goes through the scheduler (a paused server answers it); see test_weights_builders.py.
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"}
    assert min(c[p]["timeoutSeconds"] for p in ("startupProbe", "readinessProbe")) >= 30
    assert pod["readinessGates"] == [{"conditionType": "kuberollout.io/weights-synced"}]
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 1800
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["priorityClassName"] == "high"
    assert pod["schedulerName"] == "volcano" and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    assert d["spec"]["selector"]["matchLabels"] == {"kuberollout.io/pool": "qwen", "kuberollout.io/role": "server"}


def test_model_from_pvc(config: OperatorConfig) -> None:
    body = sglangpool(model={"pvc": {"claimName": "models", "subPath": "qwen3-8b"}})
    c = container(pb.server_deployment(typed_pool(body), config))
    args = c["args"]
    assert args[args.index("--model-path") + 1] == "/model"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "model")
    assert mount == {"name": "model", "mountPath": "/model", "readOnly": True, "subPath": "qwen3-8b"}
    vols = pb.server_deployment(typed_pool(body), config)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in vols


def test_simulated_engine_runs_the_runtime_image(config: OperatorConfig) -> None:
    body = sglangpool(engine="simulated", gpusPerReplica=0, model=None, extraArgs=["--token-latency", "0.01"])
    body["spec"].pop("model")
    c = container(pb.server_deployment(typed_pool(body), config))
    assert c["image"] == "rt:test"
    assert c["command"] == ["rollout-runtime"]
    assert c["args"][:5] == ["sim-engine", "--host", "0.0.0.0", "--port", "30000"]
    assert c["args"][-2:] == ["--token-latency", "0.01"]
    assert "nvidia.com/gpu" not in (c["resources"].get("limits") or {})


def test_router_and_its_rbac(config: OperatorConfig) -> None:
    body = sglangpool(router={"policy": "round_robin"})
    children, absent = pb.children(typed_pool(body), config)
    kinds = [(m["kind"], m["metadata"]["name"]) for m in children]
    assert kinds == [("Deployment", "qwen-server"), ("Service", "qwen-server"), ("ServiceAccount", "qwen-router"),
                     ("Role", "qwen-router"), ("RoleBinding", "qwen-router"), ("Deployment", "qwen-router"),
                     ("Service", "qwen-router")]
    assert absent == []
    by = {(m["kind"], m["metadata"]["name"]): m for m in children}
    role = by[("Role", "qwen-router")]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = by[("RoleBinding", "qwen-router")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "qwen-router", "namespace": "ns"}]
    router = by[("Deployment", "qwen-router")]
    c = container(router)
    assert router["spec"]["template"]["spec"]["serviceAccountName"] == "qwen-router"
    assert c["image"] == "router:test" and c["command"] == ["python3", "-m", "sglang_router.launch_router"]
    args = c["args"]
    assert "--service-discovery" in args
    sel = args.index("--selector")
    assert args[sel + 1:sel + 3] == ["kuberollout.io/pool=qwen", "kuberollout.io/role=server"]
    assert args[args.index("--service-discovery-port") + 1] == "30000"
    assert args[args.index("--service-discovery-namespace") + 1] == "ns"
    assert args[args.index("--policy") + 1] == "round_robin"
    assert args[args.index("--port") + 1] == "30000" and args[args.index("--host") + 1] == "0.0.0.0"
    assert by[("Service", "qwen-server")]["spec"]["clusterIP"] == "None"
    assert by[("Service", "qwen-router")]["spec"]["selector"] == {"kuberollout.io/pool": "qwen",
                                                                   "kuberollout.io/role": "router"}
    assert pb.endpoint(typed_pool(body)) == "http://qwen-router.ns.svc:30000"


def test_router_disabled(config: OperatorConfig) -> None:
    body = sglangpool(router={"enabled": False}, port=31000)
    children, absent = pb.children(typed_pool(body), config)
    assert [m["kind"] for m in children] == ["Deployment", "Service"]
    assert ("apps/v1", "Deployment", "qwen-router") in absent
    assert pb.endpoint(typed_pool(body)) == "http://qwen-server.ns.svc:31000"


def test_spec_hash_tracks_the_desired_state(config: OperatorConfig) -> None:
    a = pb.server_deployment(typed_pool(sglangpool(replicas=2)), config)
    b = pb.server_deployment(typed_pool(sglangpool(replicas=2)), config)
    c = pb.server_deployment(typed_pool(sglangpool(replicas=3)), config)
    assert hash_of(a) == hash_of(b) != hash_of(c)
    assert hash_of(a) == spec_hash(a)


# ---------------------------------------------------------------------------- rolloutjob


def test_state_configmap_is_created_empty_with_a_fence() -> None:
    cm = jb.state_configmap(typed_job(rolloutjob()), fence=1)
    assert cm["metadata"]["name"] == "arith-state" and "data" not in cm
    assert cm["metadata"]["labels"]["kuberollout.io/rolloutjob"] == "arith"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "RolloutJob"
    assert cm["metadata"]["annotations"][ANN_ATTEMPT] == "1"
    # The fence is not part of the spec hash: re-applying never moves it.
    assert hash_of(cm) == hash_of(jb.state_configmap(typed_job(rolloutjob()), fence=7))
    assert ANN_SPEC_HASH in cm["metadata"]["annotations"]


def test_runtime_rbac_is_least_privilege() -> None:
    body = rolloutjob()
    sa, role, binding = jb.rbac_children(typed_job(body))
    assert sa["kind"] == "ServiceAccount" and sa["metadata"]["name"] == "arith-runtime"
    assert role["rules"] == [
        {"apiGroups": ["kuberollout.io"], "resources": ["rolloutjobs"], "resourceNames": ["arith"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["arith-state"],
         "verbs": ["get", "update", "patch"]},
    ]
    assert binding["subjects"][0]["name"] == "arith-runtime"
    # A user-provided ServiceAccount: no SA created, the Role is bound to theirs.
    own = rolloutjob(runtime={"serviceAccountName": "trainer"})
    children = jb.rbac_children(typed_job(own))
    assert [c["kind"] for c in children] == ["Role", "RoleBinding"]
    assert children[1]["subjects"][0]["name"] == "trainer"


def test_bounded_staleness_reads_its_own_pool_and_no_other() -> None:
    """With maxStaleness and a poolRef, the runtime may get that one SGLangPool (its status.weightVersion), and
    is told its name; without maxStaleness (or with an external endpoint) neither the rule nor the flag exists."""
    rollout = {"batchSize": 4, "numRollouts": 3, "maxResponseLength": 64, "maxStaleness": 1}
    job = typed_job(rolloutjob(endpoint=None, poolRef={"name": "qwen"}, rollout=rollout))
    role = jb.rbac_children(job)[1]
    assert role["rules"][-1] == {"apiGroups": ["kuberollout.io"], "resources": ["sglangpools"],
                                 "resourceNames": ["qwen"], "verbs": ["get"]}
    cmd = jb.runtime_command(job, "http://qwen-router:30000")
    assert cmd[cmd.index("--sglang-pool") + 1] == "qwen"
    for body in (rolloutjob(endpoint=None, poolRef={"name": "qwen"}), rolloutjob(rollout=rollout)):
        job = typed_job(body)
        assert not any("sglangpools" in r["resources"] for r in jb.rbac_children(job)[1]["rules"])
        assert "--sglang-pool" not in jb.runtime_command(job, "http://x:1")


def test_batch_job(config: OperatorConfig) -> None:
    body = rolloutjob(engine={"requestTimeoutSeconds": 120, "maxRetries": 2},
                      runtime={"image": "my/rt:1", "extraArgs": ["--rollout-num-engines", "4"],
                               "resources": {"limits": {"cpu": 4, "memory": "8Gi"}},
                               "env": [{"name": "HF_HOME", "value": "/data/hf"}],
                               "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "rl"}}],
                               "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                               "scheduling": {"nodeSelector": {"pool": "cpu"}},
                               "imagePullSecrets": ["regcred"]})
    job = jb.batch_job(typed_job(body), 3, "http://qwen-router.ns.svc:30000", config, deadline_seconds=100)
    assert job["metadata"]["name"] == "arith-3"
    assert job["metadata"]["labels"]["kuberollout.io/attempt"] == "3"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["activeDeadlineSeconds"] == 100
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in spec["podFailurePolicy"]["rules"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "arith-runtime"
    assert pod["nodeSelector"] == {"pool": "cpu"} and pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "rl"}}]
    c = pod["containers"][0]
    assert c["image"] == "my/rt:1"
    assert c["command"][:2] == ["rollout-runtime", "run"]
    cmd = c["command"]
    assert cmd[cmd.index("--rolloutjob") + 1] == "arith" and cmd[cmd.index("--namespace") + 1] == "ns"
    assert cmd[cmd.index("--sglang-router-url") + 1] == "http://qwen-router.ns.svc:30000"
    assert cmd[cmd.index("--state-backend") + 1] == "configmap"
    assert cmd[cmd.index("--state-configmap") + 1] == "arith-state"
    assert cmd[cmd.index("--http-request-timeout") + 1] == "120"
    assert cmd[cmd.index("--http-max-retries") + 1] == "2"
    assert cmd[-2:] == ["--rollout-num-engines", "4"]
    env = {e["name"]: e for e in c["env"]}
    assert env["KUBEROLLOUT_ATTEMPT"]["value"] == "3" and env["HF_HOME"]["value"] == "/data/hf"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert c["resources"] == {"limits": {"cpu": 4, "memory": "8Gi"}}
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_runtime_command_flags_parse_as_runtime_config() -> None:
    """Every flag the operator passes is one `rollout-runtime run` understands."""
    from rollout_runtime.config import parse_cli_flags

    body = rolloutjob(engine={"requestTimeoutSeconds": 30, "numEngines": 2})
    cmd = jb.runtime_command(typed_job(body), "http://e:1")
    flags = cmd[cmd.index("--sglang-router-url"):]
    parsed = parse_cli_flags(flags)
    assert parsed["sglang_router_url"] == "http://e:1" and parsed["state_backend"] == "configmap"
    assert parsed["http_request_timeout"] == "30" and parsed["rollout_num_engines"] == "2"
