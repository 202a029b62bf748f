"""`publish_weights`: a trainer makes a new policy version the one the rollouts are generated with.

    from rollout_runtime.weights.publish import publish_weights

    publish_weights("qwen", "/ckpt/step_7", 7)                   # an SGLangPool: patch spec.weights, return
    publish_weights("qwen", "/ckpt/step_7", 7, wait=True)        # ... and wait for status.weightVersion == 7
    publish_weights(["http://127.0.0.1:30000"], "/ckpt/step_7", 7)  # routers or servers: load it now

For a pool it is the same as

    kubectl patch sglangpool qwen --type merge -p '{"spec":{"weights":{"path":"/ckpt/step_7","version":7}}}'

and the operator does the rest (pause, load, continue on every server; the readiness gate keeps a
server that is not on the new version out of the router; `status.weightVersion` once all serve it).
The caller's credentials need `get` and `patch` on that SGLangPool. For URLs it calls the servers
through `rollout_runtime.weights.update_weights` and raises `PublishError` if any server failed.

Version N is what training step N−1 made (the model's own weights are 0): a RolloutJob with
`maxStaleness` η starts rollout N only once the served version is at least N − η.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rollout_runtime.weights.sync import UpdateReport, update_weights
from rollout_runtime.weights.target import PauseMode


class PublishError(RuntimeError):
    """A version could not be published: the message names the pool or the servers that failed, and why."""


@dataclass(frozen=True)
class Published:
    """What `publish_weights` did: the version, and for URLs the weights API's report."""

    version: int
    pool: str | None = None
    report: UpdateReport | None = None
    served: int | None = None  # the pool's status.weightVersion when the call returned (wait=True: the version)


def publish_weights(pool: str | Sequence[str], path: str, version: int, *, namespace: str | None = None,
                    pause_mode: PauseMode | None = None, load_format: str | None = None, wait: bool = False,
                    timeout: float = 600.0, poll_interval: float = 0.5) -> Published:
    """Serve the weights in `path` as policy version `version`.

    `pool`: an SGLangPool's name (merge-patch its `spec.weights`; `wait` blocks until its
    `status.weightVersion` reaches the version, up to `timeout` seconds), or the URLs of routers or
    servers (an `http(s)://` string or a list of them: loaded now, all servers at once).
    `pause_mode` and `load_format` default to the pool's (URLs: `retract`, the servers' own format).
    """
    if isinstance(pool, str) and not pool.startswith(("http://", "https://")):
        return _publish_to_pool(pool, path, version, namespace=namespace, pause_mode=pause_mode,
                                load_format=load_format, wait=wait, timeout=timeout, poll_interval=poll_interval)
    from rollout_runtime.async_utils import run

    urls = [pool] if isinstance(pool, str) else list(pool)
    report = run(update_weights(urls, path, version, pause_mode=pause_mode or "retract", load_format=load_format,
                                timeout=timeout))
    if not report.ok:
        raise PublishError(f"version {version}: {report.summary()}")
    return Published(version=version, report=report, served=version)


def weights_patch(path: str, version: int, *, pause_mode: str | None = None,
                  load_format: str | None = None) -> dict[str, object]:
    """The merge patch of an SGLangPool that publishes `version` (what `kubectl patch ... --type merge` sends)."""
    weights: dict[str, object] = {"path": path, "version": version}
    if pause_mode:
        weights["pauseMode"] = pause_mode
    if load_format:
        weights["loadFormat"] = load_format
    return {"spec": {"weights": weights}}


def _publish_to_pool(name: str, path: str, version: int, *, namespace: str | None, pause_mode: str | None,
                     load_format: str | None, wait: bool, timeout: float, poll_interval: float) -> Published:
    from rollout_runtime import kube

    ns = kube.current_namespace(namespace)
    try:
        pool = kube.patch_sglangpool(name, ns, weights_patch(path, version, pause_mode=pause_mode,
                                                             load_format=load_format))
    except kube.KubernetesAccessError as exc:
        raise PublishError(f"version {version} to SGLangPool {ns}/{name}: {exc}") from None
    served = (pool.get("status") or {}).get("weightVersion")
    deadline = time.monotonic() + timeout
    while wait and (not isinstance(served, int) or served < version):
        if time.monotonic() > deadline:
            conditions = (pool.get("status") or {}).get("conditions") or []
            synced = next((c for c in conditions if c.get("type") == "WeightsSynced"), {})
            raise PublishError(f"SGLangPool {ns}/{name} serves version {served}, not {version}, after {timeout:.0f}s"
                               + (f": {synced.get('message')}" if synced.get("message") else ""))
        time.sleep(poll_interval)
        pool = kube.read_sglangpool(name, ns)
        served = (pool.get("status") or {}).get("weightVersion")
    return Published(version=version, pool=f"{ns}/{name}", served=served)
