"""The Helm chart with real helm against the test control plane."""

from __future__ import annotations

import filecmp
import json
import subprocess

import pytest
import yaml

from tests.conftest import REPO

CHART = REPO / "charts" / "kuberollout"
VALUES = sorted((CHART / "ci").glob("*-values.yaml"))

pytestmark = pytest.mark.cluster


def template(cluster, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return cluster.helm("template", "kr", str(CHART), "--namespace", "kr-system", *extra, check=check)


def test_chart_crds_are_the_generated_crds():
    top = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert top, "crds/ is empty: run the CRD generator"
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == top
    for name in top:
        assert filecmp.cmp(REPO / "crds" / name, CHART / "crds" / name, shallow=False), f"charts crds/{name} is stale"


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_lint_strict(cluster, values):
    out = cluster.helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_template_applies_with_server_side_dry_run(cluster, values):
    for ns in ("kr-system", "team-a", "team-b"):
        cluster.kubectl("create", "namespace", ns, check=False)
    rendered = template(cluster, "-f", str(values)).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount"} <= kinds
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered)
    assert "(server dry run)" in out.stdout


@pytest.mark.parametrize("setting,message", [
    ("replicaCount=2", "replicaCount"),
    ("logLevel=verbose", "logLevel"),
    ("watchNamespaces[0]=Not_A_Namespace", "watchNamespaces"),
    ("metrics.port=70000", "port"),
    ("imagee.tag=x", "imagee"),
    ("policy.allowedVolumeTypes[0]=Host Path", "allowedVolumeTypes"),
    ("policy.allowedServiceAccounts[0]=Not_An_SA", "allowedServiceAccounts"),
])
def test_bad_values_are_rejected_by_the_schema(cluster, setting, message):
    res = template(cluster, "--set", setting, check=False)
    assert res.returncode != 0
    assert "values don't meet the specifications of the schema" in res.stderr and message in res.stderr


def test_rendering_per_scope(cluster):
    cluster_scope = [d for d in yaml.safe_load_all(template(cluster).stdout) if d]
    kinds = [d["kind"] for d in cluster_scope]
    assert "ClusterRole" in kinds and "ClusterRoleBinding" in kinds and "Role" not in kinds
    dep = next(d for d in cluster_scope if d["kind"] == "Deployment")
    assert dep["spec"]["strategy"]["type"] == "Recreate" and dep["spec"]["replicas"] == 1
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args
    ns_scope = [d for d in yaml.safe_load_all(template(cluster, "--set", "watchNamespaces={team-a,team-b}").stdout) if d]
    roles = [d for d in ns_scope if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    cluster_roles = [d for d in ns_scope if d["kind"] == "ClusterRole"]
    assert [r["rules"] for r in cluster_roles] == [[{"apiGroups": ["apiextensions.k8s.io"],
                                                     "resources": ["customresourcedefinitions"],
                                                     "verbs": ["get", "list", "watch"]}]]
    dep = next(d for d in ns_scope if d["kind"] == "Deployment")
    assert {"--namespace=team-a", "--namespace=team-b"} <= set(dep["spec"]["template"]["spec"]["containers"][0]["args"])


def can_i(cluster, sa: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i`; `resource` may name a subresource as `pods/status`."""
    resource, _, sub = resource.partition("/") if resource.startswith("pods/") else (resource, "", "")
    extra = [f"--subresource={sub}"] if sub else []
    res = cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace, f"--as={sa}", check=False)
    return res.stdout.strip() == "yes"


def test_install_permissions_and_uninstall(cluster):
    ns = cluster.new_namespace("kr-install")
    other = cluster.new_namespace("kr-workloads")
    release = "kr"
    out = cluster.helm("install", release, str(CHART), "--namespace", ns, "--wait=false")
    assert "kubectl apply -f examples/k8s/sglangpool.yaml" in out.stdout  # NOTES say what to do next
    try:
        crds = cluster.kubectl("get", "crd", "-o", "name").stdout
        assert "rolloutjobs.kuberollout.io" in crds and "sglangpools.kuberollout.io" in crds
        dep = json.loads(cluster.kubectl("get", "deploy", "-n", ns, "-l", "app.kubernetes.io/instance=kr",
                                         "-o", "json").stdout)["items"]
        assert len(dep) == 1
        sa = f"system:serviceaccount:{ns}:{dep[0]['spec']['template']['spec']['serviceAccountName']}"
        for verb, resource in [("create", "jobs.batch"), ("create", "configmaps"), ("create", "deployments.apps"),
                               ("create", "services"), ("create", "roles.rbac.authorization.k8s.io"),
                               ("patch", "rolloutjobs.kuberollout.io/status"), ("watch", "sglangpools.kuberollout.io"),
                               ("create", "events"), ("patch", "pods/status")]:
            assert can_i(cluster, sa, verb, resource, other), f"operator cannot {verb} {resource}"
        for verb, resource in [("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("patch", "pods"),
                               ("delete", "pods"), ("delete", "nodes"),
                               ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
                               ("create", "clusterroles.rbac.authorization.k8s.io")]:
            assert not can_i(cluster, sa, verb, resource, other), f"operator should not {verb} {resource}"
    finally:
        cluster.helm("uninstall", release, "--namespace", ns)
    left = cluster.kubectl("get", "deploy,sa,svc,role,rolebinding", "-n", ns, "-l", "app.kubernetes.io/instance=kr",
                           "-o", "name").stdout.strip()
    assert left == ""
    cluster_left = cluster.kubectl("get", "clusterrole,clusterrolebinding", "-l", "app.kubernetes.io/instance=kr",
                                   "-o", "name").stdout.strip()
    assert cluster_left == ""
    assert "rolloutjobs.kuberollout.io" in cluster.kubectl("get", "crd", "-o", "name").stdout  # CRDs are kept


def test_namespaced_install_grants_only_watched_namespaces(cluster):
    ns = cluster.new_namespace("kr-scoped")
    watched = cluster.new_namespace("kr-watched")
    unwatched = cluster.new_namespace("kr-unwatched")
    cluster.helm("install", "krs", str(CHART), "--namespace", ns, "--set", f"watchNamespaces={{{watched}}}",
                 "--wait=false")
    try:
        sa_name = json.loads(cluster.kubectl("get", "deploy", "-n", ns, "-o", "json").stdout)["items"][0]["spec"][
            "template"]["spec"]["serviceAccountName"]
        sa = f"system:serviceaccount:{ns}:{sa_name}"
        assert can_i(cluster, sa, "create", "jobs.batch", watched)
        assert not can_i(cluster, sa, "create", "jobs.batch", unwatched)
        assert can_i(cluster, sa, "list", "customresourcedefinitions.apiextensions.k8s.io", unwatched)
        assert not can_i(cluster, sa, "create", "customresourcedefinitions.apiextensions.k8s.io", unwatched)
        assert not can_i(cluster, sa, "get", "secrets", watched)
    finally:
        cluster.helm("uninstall", "krs", "--namespace", ns)


@pytest.mark.parametrize("values", VALUES, ids=lambda p: p.stem)
def test_rendered_args_are_accepted_by_the_operator(cluster, values):
    from rollout_operator.cli import build_parser

    docs = [d for d in yaml.safe_load_all(template(cluster, "-f", str(values)).stdout) if d]
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    parsed = build_parser().parse_args(container["args"])  # exits (SystemExit) on an unknown flag
    values_doc = yaml.safe_load(values.read_text()) or {}
    assert parsed.runtime_image == values_doc.get("defaults", {}).get("runtimeImage", "ghcr.io/kuberollout/runtime:0.1.0")
    chart_policy = yaml.safe_load((CHART / "values.yaml").read_text())["policy"]
    assert list(parsed.allowed_volume_types) == chart_policy["allowedVolumeTypes"]
    assert parsed.allowed_service_accounts == () and parsed.allowed_image_prefixes == ()
    liveness_port = int(parsed.liveness.rsplit(":", 1)[1].split("/")[0])
    assert liveness_port == container["livenessProbe"]["httpGet"]["port"] or container["livenessProbe"]["httpGet"][
        "port"] == "health"


def test_admission_policy_rendering(cluster):
    """One ValidatingAdmissionPolicy (+ binding) per kind, with the policy values; scoped like the operator."""
    def policies(*extra: str) -> list[dict]:
        docs = [d for d in yaml.safe_load_all(template(cluster, *extra).stdout) if d]
        return [d for d in docs if d["kind"].startswith("ValidatingAdmissionPolicy")]

    cluster_scope = policies("--set", "policy.allowedServiceAccounts={rollout-*,trainer}")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in cluster_scope) == [
        ("ValidatingAdmissionPolicy", "kr-kuberollout-rolloutjobs"),
        ("ValidatingAdmissionPolicy", "kr-kuberollout-sglangpools"),
        ("ValidatingAdmissionPolicyBinding", "kr-kuberollout-rolloutjobs"),
        ("ValidatingAdmissionPolicyBinding", "kr-kuberollout-sglangpools"),
    ]
    job_policy = next(d for d in cluster_scope if d["metadata"]["name"].endswith("rolloutjobs")
                      and d["kind"] == "ValidatingAdmissionPolicy")
    variables = {v["name"]: v["expression"] for v in job_policy["spec"]["variables"]}
    assert json.loads(variables["allowedServiceAccounts"]) == ["^rollout-.*$", "^trainer$"]
    assert "hostPath" not in json.loads(variables["allowedVolumeTypes"])
    assert json.loads(variables["allowedVolumeTypes"]) == yaml.safe_load(
        (CHART / "values.yaml").read_text())["policy"]["allowedVolumeTypes"]
    bindings = [d for d in cluster_scope if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert all("matchResources" not in b["spec"] and b["spec"]["validationActions"] == ["Deny"] for b in bindings)
    scoped = policies("--set", "watchNamespaces={team-a,team-b}")
    for binding in (d for d in scoped if d["kind"] == "ValidatingAdmissionPolicyBinding"):
        (expr,) = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
        assert expr == {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}
    assert policies("--set", "policy.admissionPolicy.enabled=false") == []
    assert policies("--kube-version", "1.29.0") == []  # ValidatingAdmissionPolicy is GA from 1.30
