"""Smoke tests for the test control plane: the API semantics the operator relies on are real.

Each test checks one behaviour that a fake API server would plausibly get wrong: CEL validation,
status subresources and printer columns, extended-resource scheduling onto fake GPU nodes,
garbage collection, optimistic concurrency, RBAC for ServiceAccounts, and Helm against the plane.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.fixtures import require
from tests.cluster.harness import (
    GPU_RESOURCE,
    POD_CIDR,
    Cluster,
    CommandFailed,
    dumps_manifest,
    pinned_versions,
)

pytestmark = pytest.mark.cluster

GROUP = "smoke.kuberollout.io"
CRD_NAME = f"widgets.{GROUP}"
CEL_MESSAGE = "minReplicas must not exceed maxReplicas"


def widget_crd() -> dict[str, Any]:
    """A CRD shaped like ours: status subresource, printer columns, a CEL cross-field rule."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wdg"], "categories": ["kuberollout-smoke"]},
            "versions": [{
                "name": "v1alpha1", "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Min", "type": "integer", "jsonPath": ".spec.minReplicas"},
                    {"name": "Max", "type": "integer", "jsonPath": ".spec.maxReplicas"},
                    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["minReplicas", "maxReplicas"],
                            "x-kubernetes-validations": [{
                                "rule": "self.minReplicas <= self.maxReplicas",
                                "message": CEL_MESSAGE,
                            }],
                            "properties": {
                                "minReplicas": {"type": "integer", "minimum": 0},
                                "maxReplicas": {"type": "integer", "minimum": 0},
                            },
                        },
                        "status": {
                            "type": "object",
                            "properties": {"phase": {"type": "string",
                                                     "enum": ["Pending", "Ready"]}},
                        },
                    },
                }},
            }],
        },
    }


def widget(name: str, lo: int, hi: int) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1alpha1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"minReplicas": lo, "maxReplicas": hi}}


@pytest.fixture(scope="module")
def widget_crd_installed(cluster: Cluster) -> Iterator[str]:
    """Install the CRD once for the module; removed afterwards (matters on a real cluster)."""
    cluster.kubectl("apply", "-f", "-", input=dumps_manifest(widget_crd()))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    yield CRD_NAME
    cluster.kubectl("delete", "crd", CRD_NAME, "--wait=false", "--ignore-not-found",
                    check=False)


def get_json(cluster: Cluster, *args: str, namespace: str | None = None) -> Any:
    ns = ["-n", namespace] if namespace else []
    return json.loads(cluster.kubectl("get", *args, *ns, "-o", "json").stdout)


# ---------------------------------------------------------------------------------------------


def test_version_reports_the_pinned_release(cluster: Cluster) -> None:
    """The version ldflags took: /version and kubectl agree on the real release."""
    if cluster.existing:
        pytest.skip("an existing cluster runs its own Kubernetes version")
    want = pinned_versions()["kubernetes"]
    from kubernetes import client

    info = client.VersionApi(cluster.api_client()).get_code()
    assert (info.git_version, info.major, info.minor) == (want, "1", want.split(".")[1])

    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["clientVersion"]["gitVersion"] == want
    assert out["serverVersion"]["gitVersion"] == want
    assert out["serverVersion"]["gitTreeState"] == "clean"


def test_crd_cel_rule_rejects_invalid_object(cluster: Cluster, widget_crd_installed: str,
                                             namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=dumps_manifest(widget("ok", 1, 3)))
    bad = cluster.kubectl("apply", "-n", namespace, "-f", "-",
                          input=dumps_manifest(widget("bad", 5, 2)), check=False)
    assert bad.returncode != 0
    assert CEL_MESSAGE in bad.stderr
    # Schema validation (not only CEL) is enforced too.
    neg = cluster.kubectl("apply", "-n", namespace, "-f", "-",
                          input=dumps_manifest(widget("neg", -1, 2)), check=False)
    assert neg.returncode != 0 and "minReplicas" in neg.stderr


def test_crd_status_subresource_and_printer_columns(cluster: Cluster, widget_crd_installed: str,
                                                    namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=dumps_manifest(widget("w", 1, 4)))
    cluster.kubectl("patch", "widget", "w", "-n", namespace, "--subresource=status",
                    "--type=merge", "-p", '{"status": {"phase": "Ready"}}')
    # Writes to the main resource ignore status, and status writes do not bump generation.
    cluster.kubectl("patch", "widget", "w", "-n", namespace, "--type=merge",
                    "-p", '{"status": {"phase": "Pending"}}')
    obj = get_json(cluster, "widget", "w", namespace=namespace)
    assert obj["status"]["phase"] == "Ready"
    assert obj["metadata"]["generation"] == 1

    table = cluster.kubectl("get", "wdg", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "MIN", "MAX", "PHASE", "AGE"]
    assert table[1].split()[:4] == ["w", "1", "4", "Ready"]
    # The category makes the resource show up in `kubectl get <category>`.
    assert "widget.smoke.kuberollout.io/w" in cluster.kubectl(
        "get", "kuberollout-smoke", "-n", namespace, "-o", "name").stdout


def gpu_deployment(name: str, replicas: int, gpus: int, toleration: dict[str, str]
                   ) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [toleration],
                    "containers": [{
                        "name": "server",
                        "image": "registry.invalid/sglang:fake",
                        "resources": {"requests": {GPU_RESOURCE: str(gpus)},
                                      "limits": {GPU_RESOURCE: str(gpus)}},
                    }],
                },
            },
        },
    }


def test_gpu_deployment_runs_on_fake_gpu_nodes(cluster: Cluster, namespace: str,
                                               gpu_nodes: list[str]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=dumps_manifest(gpu_deployment("gpu", 2, 1, cluster.gpu_toleration)))
    cluster.kubectl("rollout", "status", "deployment/gpu", "-n", namespace, "--timeout=90s",
                    timeout=120)
    pods = get_json(cluster, "pods", "-l", "app=gpu", namespace=namespace)["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] in gpu_nodes
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"
        if not cluster.existing:
            assert pod["status"]["podIP"].startswith(POD_CIDR.split(".0.0/")[0] + ".")


def test_scheduler_accounts_for_gpus(cluster: Cluster, namespace: str,
                                     gpu_nodes: list[str]) -> None:
    """A pod asking for more GPUs than any node has stays Pending for that reason."""
    node = cluster.core().read_node(gpu_nodes[0])
    too_many = int(node.status.allocatable[GPU_RESOURCE]) + 1
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=dumps_manifest(
        gpu_deployment("greedy", 1, too_many, cluster.gpu_toleration)))

    def unschedulable() -> bool:
        pods = get_json(cluster, "pods", "-l", "app=greedy", namespace=namespace)["items"]
        conds = pods[0]["status"].get("conditions", []) if pods else []
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                   and f"Insufficient {GPU_RESOURCE}" in c.get("message", "") for c in conds)

    cluster.wait_until("the greedy pod to be Unschedulable", unschedulable, timeout=60)


def test_garbage_collector_deletes_dependents(cluster: Cluster, namespace: str) -> None:
    require(cluster, "kube-controller-manager")
    core = cluster.core()
    from kubernetes import client

    owner = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner")))
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner",
                                  uid=owner.metadata.uid)
    core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="child", owner_references=[ref])))

    # A Deployment owns its ReplicaSets the same way.
    cluster.kubectl("create", "deployment", "web", "--image=registry.invalid/web:1",
                    "-n", namespace)
    cluster.wait_until("the ReplicaSet of deployment web", lambda: bool(
        get_json(cluster, "rs", "-l", "app=web", namespace=namespace)["items"]))

    core.delete_namespaced_config_map("owner", namespace)
    cluster.kubectl("delete", "deployment", "web", "-n", namespace)
    cluster.wait_until("the child ConfigMap to be collected", lambda: not [
        c for c in core.list_namespaced_config_map(namespace).items
        if c.metadata.name == "child"])
    cluster.wait_until("the ReplicaSet to be collected", lambda: not get_json(
        cluster, "rs", "-l", "app=web", namespace=namespace)["items"])


def test_stale_resource_version_is_a_conflict(cluster: Cluster, namespace: str) -> None:
    """Optimistic concurrency: the runtime's state commits depend on this 409."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = cluster.core()
    cm = core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="state"), data={"position": "0"}))
    stale = cm.metadata.resource_version
    cm.data = {"position": "1"}
    core.replace_namespaced_config_map("state", namespace, cm)

    cm.data = {"position": "2"}
    cm.metadata.resource_version = stale
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("state", namespace, cm)
    assert exc.value.status == 409
    assert core.read_namespaced_config_map("state", namespace).data == {"position": "1"}


def test_rbac_for_service_accounts(cluster: Cluster, namespace: str) -> None:
    """A Role scoped to one ConfigMap, checked with impersonation and with a real token."""
    sa = f"system:serviceaccount:{namespace}:runner"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=dumps_manifest(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "job-state"},
         "data": {"position": "0"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "runner"},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": ["job-state"], "verbs": ["get", "update", "patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "runner"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runner"},
         "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}]},
    ))

    def can_i(*args: str) -> str:
        return cluster.kubectl("auth", "can-i", *args, f"--as={sa}", "-n", namespace,
                               check=False).stdout.strip()

    assert can_i("get", "configmaps/job-state") == "yes"
    assert can_i("update", "configmaps/job-state") == "yes"
    assert can_i("get", "configmaps/other") == "no"
    assert can_i("delete", "configmaps/job-state") == "no"
    assert can_i("list", "pods") == "no"

    # The same with the ServiceAccount's own (TokenRequest) credentials.
    kubeconfig = cluster.kubeconfig_for_sa(namespace, "runner")
    got = cluster.kubectl("get", "configmap", "job-state", "-o", "jsonpath={.data.position}",
                          kubeconfig=kubeconfig)
    assert got.stdout == "0"
    denied = cluster.kubectl("get", "pods", kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json",
                                        kubeconfig=kubeconfig).stdout)
    assert whoami["status"]["userInfo"]["username"] == sa


def tiny_chart(root: Path) -> Path:
    """A throwaway chart with one templated ConfigMap."""
    chart = root / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(textwrap.dedent("""\
        apiVersion: v2
        name: tiny
        version: 0.1.0
        appVersion: "1.0"
        """))
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(textwrap.dedent("""\
        apiVersion: v1
        kind: ConfigMap
        metadata:
          name: {{ .Release.Name }}-greeting
          labels:
            app.kubernetes.io/managed-by: {{ .Release.Service }}
        data:
          greeting: {{ .Values.greeting | quote }}
          kubeVersion: {{ .Capabilities.KubeVersion.Version | quote }}
        """))
    return chart


def test_helm_template_and_install(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    require(cluster, "helm")
    version = cluster.helm("version", "--short").stdout.strip()
    if not cluster.existing:  # an existing cluster may come with the user's own helm
        assert version.startswith(pinned_versions()["helm"])

    chart = tiny_chart(tmp_path)
    rendered = cluster.helm("template", "smoke", str(chart), "--set", "greeting=hi").stdout
    assert "name: smoke-greeting" in rendered and 'greeting: "hi"' in rendered

    cluster.helm("install", "smoke", str(chart), "-n", namespace, "--set", "greeting=hey",
                 "--wait", "--timeout=60s")
    cm = cluster.core().read_namespaced_config_map("smoke-greeting", namespace)
    assert cm.data["greeting"] == "hey"
    if not cluster.existing:
        # Installed against the plane, .Capabilities comes from the live server.
        assert cm.data["kubeVersion"] == pinned_versions()["kubernetes"]
    releases = json.loads(cluster.helm("list", "-n", namespace, "-o", "json").stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("smoke", "deployed")]

    cluster.helm("uninstall", "smoke", "-n", namespace, "--wait")
    from kubernetes.client.rest import ApiException

    with pytest.raises(ApiException) as exc:
        cluster.core().read_namespaced_config_map("smoke-greeting", namespace)
    assert exc.value.status == 404


def test_namespaces_get_controller_managed_defaults(cluster: Cluster, namespace: str) -> None:
    """The controller-manager runs: default ServiceAccount and kube-root-ca.crt appear."""
    require(cluster, "kube-controller-manager")
    core = cluster.core()
    assert core.read_namespaced_service_account("default", namespace)
    cluster.wait_until("kube-root-ca.crt", lambda: bool(
        core.read_namespaced_config_map("kube-root-ca.crt", namespace).data["ca.crt"]),
        timeout=30)
    if cluster.ca_file is not None and not cluster.existing:
        published = core.read_namespaced_config_map("kube-root-ca.crt", namespace).data["ca.crt"]
        assert published.strip() == cluster.ca_file.read_text().strip()


def test_kubectl_errors_are_reported(cluster: Cluster) -> None:
    """The helper's CommandFailed carries stderr, which makes failing tests readable."""
    with pytest.raises(CommandFailed) as exc:
        cluster.kubectl("get", "configmap", "does-not-exist", "-n", "default")
    assert "not found" in str(exc.value)
