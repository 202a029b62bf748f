"""SGLangPool -> its children: server Deployment, headless Service, router (SA, Role, RoleBinding,
Deployment, Service). Pure functions of the pool object and the operator's settings.

Choices worth knowing:
- Servers roll with maxSurge 0 / maxUnavailable 1: a surge pod would need spare GPUs, which a
  GPU pool rarely has; taking one server down at a time needs none.
- Probes, the weights readiness gate and the router's health checks are sized for planned pauses
  (weight updates): see `sglangpool_probes.py`. Startup and readiness run a real one-token
  generation (`/health_generate`), liveness only checks the port.
- The router discovers servers itself (`--service-discovery --selector ...`): it adds a pod once
  it is Running and Ready, so the readiness probe gates traffic. It needs get/list/watch on pods
  in the pool's namespace, hence its own ServiceAccount, Role and RoleBinding.
"""

from __future__ import annotations

from typing import Any

from rollout_operator.api.sglangpool_types import SGLangPool, SGLangPoolSpec
from rollout_operator.builders.common import (
    Manifest,
    base_labels,
    env_list,
    metadata,
    mounts_list,
    resources_dict,
    role,
    role_binding,
    scheduling_fields,
    service_account,
    volumes_list,
    with_hash,
)
from rollout_operator.builders.sglangpool_probes import readiness_gates, router_health_args, server_probes
from rollout_operator.constants import LABEL_POOL, LABEL_POOL_ROLE, ROUTER_METRICS_PORT
from rollout_operator.settings import OperatorConfig

MODEL_MOUNT = "/model"


def server_name(pool: str) -> str:
    return f"{pool}-server"


def router_name(pool: str) -> str:
    return f"{pool}-router"


def selector_labels(pool: str, role: str) -> dict[str, str]:
    """The labels a Deployment selects its pods by (immutable once created, so kept minimal)."""
    return {LABEL_POOL: pool, LABEL_POOL_ROLE: role}


def selector_string(pool: str) -> str:
    """status.selector: the server pods' label selector (scale subresource, HPA, the router)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(pool, "server").items())


def pool_labels(pool: str, role: str) -> dict[str, str]:
    return {**base_labels(pool, f"sglang-{role}"), **selector_labels(pool, role)}


def endpoint(pool: SGLangPool) -> str:
    """The URL RolloutJobs use: the router Service, or the headless server Service without a router."""
    name, ns, spec = pool.name, pool.namespace, pool.spec
    if spec.router.enabled:
        return f"http://{router_name(name)}.{ns}.svc:{spec.router.port}"
    return f"http://{server_name(name)}.{ns}.svc:{spec.port}"


# ------------------------------------------------------------------------------ servers


def server_command(name: str, spec: SGLangPoolSpec) -> tuple[list[str], list[str]]:
    """(command, args) of a server container."""
    if spec.engine == "simulated":
        args = ["sim-engine", "--host", "0.0.0.0", "--port", str(spec.port)]
        if spec.model and spec.model.served_model_name:
            args += ["--model-name", spec.model.served_model_name]
        return ["rollout-runtime"], args + list(spec.extra_args or [])
    assert spec.model is not None  # CEL: required for engine sglang
    model_path = spec.model.path if spec.model.path else MODEL_MOUNT
    args = [
        "--model-path", model_path,
        "--tp-size", str(max(1, spec.gpus_per_replica)),
        "--host", "0.0.0.0",
        "--port", str(spec.port),
        "--enable-metrics",
    ]
    if spec.model.served_model_name:
        args += ["--served-model-name", spec.model.served_model_name]
    return ["python3", "-m", "sglang.launch_server"], args + list(spec.extra_args or [])


def server_deployment(pool: SGLangPool, config: OperatorConfig) -> Manifest:
    name, spec = pool.name, pool.spec
    image = spec.image or (config.runtime_image if spec.engine == "simulated" else config.sglang_image)
    command, args = server_command(name, spec)
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}}]
    if spec.model and spec.model.pvc:
        pvc = spec.model.pvc
        mount: dict[str, Any] = {"name": "model", "mountPath": MODEL_MOUNT, "readOnly": pvc.read_only}
        if pvc.sub_path:
            mount["subPath"] = pvc.sub_path
        mounts.append(mount)
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": pvc.claim_name,
                                                                   "readOnly": pvc.read_only}})
    container: dict[str, Any] = {
        "name": "server",
        "image": image,
        "command": command,
        "args": args,
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": env_list(spec.env),
        "resources": resources_dict(spec.resources, spec.gpus_per_replica),
        "volumeMounts": mounts + mounts_list(spec.volume_mounts),
        **server_probes(spec, config.weights_pause_budget_seconds),
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    labels = pool_labels(name, "server")
    return with_hash({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(server_name(name), pool, labels),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(name, "server")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port),
                                    "prometheus.io/path": "/metrics"},
                },
                "spec": {
                    "containers": [container],
                    "readinessGates": readiness_gates(),
                    "volumes": volumes + volumes_list(spec.volumes),
                    "enableServiceLinks": False,
                    **scheduling_fields(spec.scheduling),
                },
            },
        },
    })


def server_service(pool: SGLangPool) -> Manifest:
    """Headless: one DNS record per ready server (and the endpoint when the router is disabled)."""
    name, spec = pool.name, pool.spec
    return with_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(server_name(name), pool, pool_labels(name, "server")),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(name, "server"),
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    })


# ------------------------------------------------------------------------------- router


def router_service_account(pool: SGLangPool) -> Manifest:
    return service_account(router_name(pool.name), pool, pool_labels(pool.name, "router"))


def router_role(pool: SGLangPool) -> Manifest:
    """Kubernetes service discovery: the router lists and watches the pool's pods."""
    return role(router_name(pool.name), pool, pool_labels(pool.name, "router"),
                [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])


def router_role_binding(pool: SGLangPool) -> Manifest:
    return role_binding(router_name(pool.name), pool, pool_labels(pool.name, "router"), router_name(pool.name))


def router_args(pool: SGLangPool, config: OperatorConfig) -> list[str]:
    name, ns, spec = pool.name, pool.namespace, pool.spec
    selector = [f"{k}={v}" for k, v in selector_labels(name, "server").items()]
    return [
        "--host", "0.0.0.0",
        "--port", str(spec.router.port),
        "--service-discovery",
        "--selector", *selector,
        # Always explicit: the documented default (80) and the code's (8000) disagree.
        "--service-discovery-port", str(spec.port),
        "--service-discovery-namespace", ns,
        "--policy", spec.router.policy,
        "--prometheus-host", "0.0.0.0",
        "--prometheus-port", str(ROUTER_METRICS_PORT),
        *router_health_args(config.weights_pause_budget_seconds),
        *(spec.router.extra_args or []),
    ]


def router_deployment(pool: SGLangPool, config: OperatorConfig) -> Manifest:
    name, spec = pool.name, pool.spec
    labels = pool_labels(name, "router")
    container: dict[str, Any] = {
        "name": "router",
        "image": spec.router.image or config.router_image,
        "command": ["python3", "-m", "sglang_router.launch_router"],
        "args": router_args(pool, config),
        "ports": [{"name": "http", "containerPort": spec.router.port, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": ROUTER_METRICS_PORT, "protocol": "TCP"}],
        "resources": resources_dict(spec.router.resources),
        # /readiness is 503 until at least one server is registered and healthy.
        "readinessProbe": {"httpGet": {"path": "/readiness", "port": "http"}, "periodSeconds": 10,
                           "timeoutSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/liveness", "port": "http"}, "periodSeconds": 30,
                          "timeoutSeconds": 10, "failureThreshold": 5},
    }
    return with_hash({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(router_name(name), pool, labels),
        "spec": {
            "replicas": spec.router.replicas,
            "selector": {"matchLabels": selector_labels(name, "router")},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(ROUTER_METRICS_PORT),
                                    "prometheus.io/path": "/metrics"},
                },
                "spec": {
                    "serviceAccountName": router_name(name),
                    "containers": [container],
                    "enableServiceLinks": False,
                    **scheduling_fields(spec.router.scheduling),
                },
            },
        },
    })


def router_service(pool: SGLangPool) -> Manifest:
    name, spec = pool.name, pool.spec
    return with_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(router_name(name), pool, pool_labels(name, "router")),
        "spec": {
            "selector": selector_labels(name, "router"),
            "ports": [{"name": "http", "port": spec.router.port, "targetPort": "http", "protocol": "TCP"},
                      {"name": "metrics", "port": ROUTER_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}],
        },
    })


def children(pool: SGLangPool, config: OperatorConfig) -> tuple[list[Manifest], list[tuple[str, str, str]]]:
    """(desired children, (apiVersion, kind, name) of children that must not exist)."""
    desired = [server_deployment(pool, config), server_service(pool)]
    router = [router_service_account(pool), router_role(pool), router_role_binding(pool),
              router_deployment(pool, config), router_service(pool)]
    if pool.spec.router.enabled:
        return desired + router, []
    return desired, [(m["apiVersion"], m["kind"], m["metadata"]["name"]) for m in router]
