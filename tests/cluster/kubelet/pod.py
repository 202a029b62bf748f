"""One pod on the process node: set up, run its containers, report status, tear down.

Set-up is what the kubelet does before containers start: an IP (from the node's loopback block),
a directory, the ServiceAccount token and a kubeconfig for it, the environment (downward API,
ConfigMap/Secret references). A pod the process kubelet cannot run (see podspec.Unsupported)
stays Pending with its container waiting in CreateContainerError and a Warning event saying why.

Tear-down on deletion follows the kubelet: SIGTERM, SIGKILL after the deletion's grace period,
a final status with the containers terminated, then the pod object is deleted for good
(gracePeriodSeconds 0, with the pod's UID as precondition). A pod removed without grace (force
delete) has its processes killed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from tests.cluster.kubelet import podspec
from tests.cluster.kubelet.api import ApiError
from tests.cluster.kubelet.container import ContainerRunner
from tests.cluster.kubelet.context import KubeletContext
from tests.cluster.kubelet.status import ContainerRecord, comparable, now_rfc3339, pod_status

log = logging.getLogger(__name__)

CONFIG_RETRY_S = 2.0
FORCE_DELETE_GRACE = 2.0


class PodRunner:
    """Owns one pod's processes and its status, from admission to deletion."""

    def __init__(self, ctx: KubeletContext, pod: dict[str, Any]) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        self.dir = ctx.pod_dir(pod)
        self.pod_ip = ""
        self.start_time = now_rfc3339()
        self.records = [ContainerRecord(c["name"], c.get("image", "")) for c in pod["spec"]["containers"]]
        self.runners: list[ContainerRunner] = []
        self.terminating = False
        self.gone = False  # the pod object no longer exists
        self._dirty = asyncio.Event()
        self._last_written: Any = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._main: asyncio.Task[Any] | None = None
        self._stop_event = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._status_writer()))
        self._main = loop.create_task(self._run())

    def latest(self) -> Mapping[str, Any]:
        return self.pod

    def notify(self) -> None:
        self._dirty.set()

    # -- events from the informer ------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        """A newer version of the pod (readiness-gate conditions, deletionTimestamp, ...)."""
        if pod["metadata"].get("uid") != self.pod["metadata"].get("uid") or not _newer(pod, self.pod):
            return
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp") and not self.terminating:
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            asyncio.get_running_loop().create_task(self.terminate(float(30 if grace is None else grace)))
        else:
            self.notify()  # gates may have changed: Ready is recomputed

    def deleted(self) -> None:
        """The pod object is gone (force delete, or our own final delete)."""
        self.gone = True
        if not self.terminating:
            asyncio.get_running_loop().create_task(self.terminate(FORCE_DELETE_GRACE))

    # -- lifecycle -----------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            podspec.check_supported(self.pod)
            self.pod_ip = self.ctx.net.pods.allocate()
            self.dir.mkdir(parents=True, exist_ok=True)
            self.notify()
            automount = self.pod["spec"].get("automountServiceAccountToken", True) is not False
            if automount:
                ttl = await self.ctx.write_credentials(self.pod, self.dir)
                self._tasks.append(asyncio.get_running_loop().create_task(self._refresh_token(ttl)))
            commands = await self._prepare(automount)
            if commands is None:
                return
            for container, (argv, env) in zip(self.pod["spec"]["containers"], commands):
                self.runners.append(ContainerRunner(self.ctx, self.latest, container, argv, env, self.dir,
                                                    self.pod_ip, self.notify, self._record(container["name"])))
            await asyncio.gather(*(r.run() for r in self.runners))
            # Every container is done for good (restartPolicy Never/OnFailure): the pod is terminal.
            self.notify()
        except podspec.Unsupported as exc:
            self._refuse(str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - report, never crash the kubelet
            log.exception("pod %s failed to start", self.key)
            self._refuse(f"process kubelet error: {exc!r}")
        finally:
            if not self.terminating and all(r.done for r in self.records) and self.runners:
                self.ctx.net.pods.release(self.pod_ip)

    def _record(self, name: str) -> ContainerRecord:
        return next(r for r in self.records if r.name == name)

    async def _prepare(self, automount: bool) -> list[tuple[list[str], dict[str, str]]] | None:
        """argv and env per container; waits (CreateContainerConfigError) for missing config."""
        ns = self.pod["metadata"]["namespace"]
        while not self.terminating:
            try:
                cms, secrets = await self._fetch_references()
                out = []
                for c in self.pod["spec"]["containers"]:
                    env = self.ctx.base_env(ns, self.pod["metadata"]["name"])
                    if automount:
                        env["KUBECONFIG"] = str(self.dir / "kubeconfig")
                    pod_env = podspec.container_env(self._with_ip(), c, configmaps=cms, secrets=secrets,
                                                    node_ip=self.ctx.node_ip, node_capacity=self.ctx.capacity)
                    env.update(pod_env)
                    cmd = podspec.local_command(c, pod_env, self.pod_ip, self.ctx.python, self.ctx.scripts_dir)
                    log.info("pod %s container %s: %s", self.key, c["name"], cmd.describe)
                    out.append((cmd.argv, env))
                return out
            except podspec.ConfigMissing as exc:
                for rec in self.records:
                    rec.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
                self.ctx.event(self.pod, "Warning", "Failed", f"Error: {exc}")
                self.notify()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), CONFIG_RETRY_S)
        return None

    def _with_ip(self) -> dict[str, Any]:
        """The pod as the downward API sees it once its IP is assigned."""
        status = dict(self.pod.get("status") or {})
        status.update(podIP=self.pod_ip, podIPs=[{"ip": self.pod_ip}])
        return {**self.pod, "status": status}

    async def _fetch_references(self) -> tuple[dict[str, Any], dict[str, Any]]:
        ns = self.pod["metadata"]["namespace"]
        cm_names, secret_names = podspec.referenced_objects(self.pod)

        async def get(kind: str, name: str) -> Any:
            try:
                return await self.ctx.api.get(f"/api/v1/namespaces/{ns}/{kind}/{name}")
            except ApiError as exc:
                if exc.status == 404:
                    return None
                raise

        cms = {n: await get("configmaps", n) for n in cm_names}
        secrets = {n: await get("secrets", n) for n in secret_names}
        return cms, secrets

    def _refuse(self, message: str) -> None:
        for rec in self.records:
            rec.state = {"waiting": {"reason": "CreateContainerError", "message": message}}
        self.ctx.event(self.pod, "Warning", "Failed", message)
        log.warning("pod %s refused: %s", self.key, message)
        self.notify()

    async def _refresh_token(self, ttl: float) -> None:
        """Rotate the projected token at 80% of its life, as the kubelet does."""
        while not self.terminating:
            await asyncio.sleep(ttl * 0.8)
            with contextlib.suppress(ApiError, aiohttp.ClientError, asyncio.TimeoutError):
                ttl = await self.ctx.write_credentials(self.pod, self.dir)

    async def terminate(self, grace: float) -> None:
        """Graceful stop (deletion): stop processes, final status, then delete the object."""
        if self.terminating:
            return
        self.terminating = True
        self._stop_event.set()
        log.info("terminating pod %s (grace %gs)", self.key, grace)
        await asyncio.gather(*(r.stop(grace, "pod deleted") for r in self.runners))
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self._main.cancel()
                await self._main
        for rec in self.records:
            rec.done, rec.ready = True, False
            if not rec.ever_ran:  # never started: report it terminated without a process
                rec.ever_ran = True
                rec.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                            "message": "The container could not be located when the pod was "
                                                       "terminated", "startedAt": None, "finishedAt": now_rfc3339()}}
        self.ctx.net.pods.release(self.pod_ip)
        if not self.gone:
            await self._write_status(force=True)
            with contextlib.suppress(ApiError, aiohttp.ClientError, asyncio.TimeoutError):
                await self.ctx.api.delete(self.path, {"gracePeriodSeconds": 0,
                                                      "preconditions": {"uid": self.pod["metadata"]["uid"]}})
        for t in self._tasks:
            t.cancel()

    async def shutdown(self, grace: float) -> None:
        """Kubelet shutdown: stop the processes, leave the pod objects to the plane's teardown."""
        self.gone = True
        await self.terminate(grace)

    # -- status --------------------------------------------------------------------------------

    async def _status_writer(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._write_status()
            except ApiError as exc:
                if exc.status == 404:
                    return
                log.warning("status of %s not written: %s", self.key, exc)
                await asyncio.sleep(0.5)
                self._dirty.set()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                log.warning("status of %s not written: %r", self.key, exc)
                await asyncio.sleep(0.5)
                self._dirty.set()

    async def _write_status(self, force: bool = False) -> None:
        status = pod_status(self.pod, self.records, pod_ip=self.pod_ip, host_ip=self.ctx.node_ip,
                            start_time=self.start_time)
        if not force and comparable(status) == self._last_written:
            return
        self._last_written = comparable(status)
        patched = await self.ctx.api.patch(self.path + "/status", {"status": status})
        # Keep the conditions we just wrote, so the next transition time is computed from them.
        if patched.get("metadata", {}).get("uid") == self.pod["metadata"].get("uid") and _newer(patched, self.pod):
            self.pod = patched


def _newer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether object ``a`` is at least as new as ``b`` (etcd resourceVersions are integers)."""
    try:
        return int(a["metadata"]["resourceVersion"]) >= int(b["metadata"]["resourceVersion"])
    except (KeyError, ValueError):
        return True
