"""From a pod spec to a local process: the "image swap", bind addresses, environment, ports.

Pure functions of the pod object (and the ConfigMaps/Secrets it references), so they are unit
tested without a cluster. A container image cannot run here, so the kubelet runs the container's
*command* with this machine's equivalent of the image:

- `rollout-runtime ...` / `rollout-operator ...` (the runtime image): the console scripts of the
  Python environment the kubelet runs in (the test virtualenv, with the checkout on PYTHONPATH);
- `python3 ...` / `python ...` (the router image runs `python3 -m sglang_router.launch_router`):
  this environment's interpreter, which has the real sglang-router wheel;
- a few POSIX tools whose meaning does not depend on the image (`sh`, `sleep`, `true`, ...);
- the real SGLang server (`python3 -m sglang.launch_server`) is refused with a clear reason: it
  needs GPUs and the SGLang image. Such pods belong on the kwok nodes, which fake them.

A bind-all address in the arguments (`0.0.0.0`, `::`) becomes the pod IP: in a pod it would bind
the pod's own network namespace; here every pod shares the host's, and binding the pod IP keeps
two pods with the same port apart.
"""

from __future__ import annotations

import base64
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PYTHONS = re.compile(r"^(.*/)?python(3(\.\d+)?)?$")
LOCAL_SCRIPTS = ("rollout-runtime", "rollout-operator")
HOST_TOOLS = ("sh", "bash", "sleep", "true", "false", "cat", "test", "echo", "env")
BIND_ALL = ("0.0.0.0", "::", "[::]")
# Modules that need the real SGLang image (GPUs, CUDA kernels): faked by kwok, never run here.
REFUSED_MODULES = re.compile(r"^sglang(\.|$)")
# Volume types whose mountPath would alias a real path of this machine with real data behind it.
REFUSED_VOLUMES = ("persistentVolumeClaim", "hostPath", "nfs", "csi", "iscsi", "ephemeral")


class Unsupported(Exception):
    """The process kubelet cannot run this pod; the message says why and what to do instead."""


class ConfigMissing(Exception):
    """A referenced ConfigMap/Secret key is missing (CreateContainerConfigError; retried)."""


@dataclass(frozen=True)
class LocalCommand:
    argv: list[str]
    describe: str  # what the image swap did, for events and logs


def expand_vars(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command, args and env values: $(VAR) becomes the value
    when VAR is defined (else stays as written), $$ escapes a dollar."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and (end := value.find(")", i + 2)) != -1:
            name = value[i + 2:end]
            out.append(env[name] if name in env else value[i:end + 1])
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def local_command(container: Mapping[str, Any], env: Mapping[str, str], pod_ip: str, python: str,
                  scripts_dir: str) -> LocalCommand:
    """The argv to run for this container here, or Unsupported with the reason."""
    image = container.get("image", "")
    command = [expand_vars(str(a), env) for a in container.get("command") or []]
    args = [expand_vars(str(a), env) for a in container.get("args") or []]
    if not command:
        raise Unsupported(f"container {container['name']!r} (image {image!r}) has no command: the image's "
                          "entrypoint is not known here; give the container an explicit command")
    argv = bind_to_pod_ip(command + args, pod_ip)
    head = argv[0]
    if PYTHONS.match(head):
        module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
        if REFUSED_MODULES.match(module):
            raise Unsupported(f"container {container['name']!r} runs `python3 -m {module}` (image {image!r}): "
                              "the real SGLang server needs GPUs and the SGLang image and cannot run as a local "
                              "process. Use engine: simulated, or place the pod on a kwok node "
                              "(kwok.x-k8s.io/node=fake toleration), where kwok fakes it")
        return LocalCommand([python, *argv[1:]], f"{head} -> {python}")
    if head in LOCAL_SCRIPTS:
        path = os.path.join(scripts_dir, head)
        if not os.access(path, os.X_OK):
            raise Unsupported(f"{head} is not installed in {scripts_dir} (pip install -e . in the test venv)")
        return LocalCommand([path, *argv[1:]], f"{head} -> {path}")
    if os.path.basename(head) in HOST_TOOLS:
        return LocalCommand(argv, f"{head} (host tool)")
    raise Unsupported(f"container {container['name']!r}: image {image!r} with command {head!r} has no local "
                      f"equivalent; the process kubelet runs {', '.join(LOCAL_SCRIPTS)}, python3 and "
                      f"{', '.join(HOST_TOOLS)}")


def bind_to_pod_ip(argv: list[str], pod_ip: str) -> list[str]:
    """`--host 0.0.0.0` -> `--host <pod IP>` (also `--x=0.0.0.0`), for every bind-all argument."""
    out = []
    for arg in argv:
        if arg in BIND_ALL:
            arg = pod_ip
        elif "=" in arg and arg.startswith("-") and arg.split("=", 1)[1] in BIND_ALL:
            arg = arg.split("=", 1)[0] + "=" + pod_ip
        out.append(arg)
    return out


def check_supported(pod: Mapping[str, Any]) -> None:
    """Refuse pods whose semantics a local process cannot honour, before anything starts."""
    spec = pod["spec"]
    if spec.get("initContainers"):
        raise Unsupported("initContainers are not supported by the process kubelet")
    if spec.get("hostNetwork"):
        raise Unsupported("hostNetwork pods are not supported by the process kubelet")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    for c in spec["containers"]:
        for m in c.get("volumeMounts") or []:
            vol = volumes.get(m["name"], {})
            kind = next((k for k in REFUSED_VOLUMES if k in vol), None)
            if kind:
                raise Unsupported(f"container {c['name']!r} mounts a {kind} volume at {m['mountPath']}: a local "
                                  "process would read and write this machine's path instead. Run such pods "
                                  "on a real cluster (USE_EXISTING_CLUSTER=1)")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if "grpc" in (c.get(probe) or {}):
                raise Unsupported(f"container {c['name']!r}: grpc {probe} is not supported")


# ------------------------------------------------------------------------------ environment


def field_value(pod: Mapping[str, Any], path: str, node_ip: str) -> str:
    """A downward-API fieldRef, as the kubelet resolves it."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": node_ip, "status.hostIPs": node_ip,
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs") or []),
    }
    if path not in simple:
        raise Unsupported(f"fieldRef {path!r} is not supported")
    return simple[path]


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def quantity(value: str | int | float) -> float:
    m = _QUANTITY.match(str(value))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any], node_capacity: Mapping[str, str]) -> str:
    """A resourceFieldRef: the request/limit divided by the divisor, rounded up (limits default to
    the node's allocatable, as in the kubelet)."""
    kind, _, resource = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if value is None:
        value = node_capacity.get(resource, "0") if kind == "limits" else "0"
    return str(math.ceil(quantity(value) / quantity(ref.get("divisor") or "1")))


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any], *, configmaps: Mapping[str, Any],
                  secrets: Mapping[str, Any], node_ip: str, node_capacity: Mapping[str, str]) -> dict[str, str]:
    """envFrom then env, in order, with $(VAR) expansion against what is defined so far.

    ``configmaps``/``secrets`` map names to their objects (None when absent); a missing key that is
    not optional raises ConfigMissing, as the kubelet's CreateContainerConfigError.
    """
    env: dict[str, str] = {}

    def source(kind: str, name: str) -> dict[str, str] | None:
        obj = (configmaps if kind == "configMap" else secrets).get(name)
        if obj is None:
            return None
        if kind == "configMap":
            return dict(obj.get("data") or {})
        return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}

    for ref in container.get("envFrom") or []:
        kind = "configMap" if "configMapRef" in ref else "secret"
        spec = ref.get("configMapRef") or ref.get("secretRef") or {}
        data = source(kind, spec["name"])
        if data is None:
            if spec.get("optional"):
                continue
            raise ConfigMissing(f"{kind} {spec['name']!r} not found")
        env.update({ref.get("prefix", "") + k: v for k, v in data.items()})

    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand_vars(str(var.get("value", "")), env)
            continue
        vf = var["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"], node_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_value(container, vf["resourceFieldRef"], node_capacity)
        else:
            kind = "configMap" if "configMapKeyRef" in vf else "secret"
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
            data = source(kind, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = f"{kind} {ref['name']!r}" + ("" if data is None else f" key {ref['key']!r}")
                raise ConfigMissing(f"{what} not found (env {name})")
            env[name] = data[ref["key"]]
    return env


def referenced_objects(pod: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets the containers' env refers to (fetched beforehand)."""
    cms: set[str] = set()
    secrets: set[str] = set()
    for c in pod["spec"]["containers"]:
        for ref in c.get("envFrom") or []:
            if "configMapRef" in ref:
                cms.add(ref["configMapRef"]["name"])
            if "secretRef" in ref:
                secrets.add(ref["secretRef"]["name"])
        for var in c.get("env") or []:
            vf = var.get("valueFrom") or {}
            if "configMapKeyRef" in vf:
                cms.add(vf["configMapKeyRef"]["name"])
            if "secretKeyRef" in vf:
                secrets.add(vf["secretKeyRef"]["name"])
    return cms, secrets


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise Unsupported(f"container {container['name']!r} has no port named {port!r}")
