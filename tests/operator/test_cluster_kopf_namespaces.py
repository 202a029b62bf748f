"""A namespace created while kopf starts up is watched (rollout_operator/kopf_fixes.py).

kopf, serving namespace patterns, lists the namespaces, then starts a watcher that lists them
again and ignores that second listing's objects. A namespace created between the two listings
was never watched: the CI run at 243e2d5 lost a test to it (the operator never reconciled the
test's fresh kro-* namespace). This test puts the namespace exactly there, deterministically:
kopf (in this process, against the real API server) runs with its namespace watcher wrapped so
that the namespace is created after the first listing and before the watcher's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._cogs.structs.references import Insights
from kopf._core.reactor import queueing

from rollout_operator import kopf_fixes
from tests.cluster.harness import Cluster

pytestmark = pytest.mark.cluster


@contextlib.contextmanager
def kopf_in_a_thread(registry: kopf.OperatorRegistry, pattern: str, insights: Insights) -> Iterator[None]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(kopf.operator(registry=registry, namespaces=[pattern], standalone=True,
                                      stop_flag=stop, insights=insights))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors


def test_a_namespace_created_between_kopfs_two_namespace_listings_is_watched(
        crds_installed: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = crds_installed
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    assert kopf_fixes.apply()
    name = f"kro-race-{secrets.token_hex(3)}"
    created = threading.Event()
    real_watcher = queueing.watcher

    async def watcher_after_a_namespace_appears(*, resource: Any, **kwargs: Any) -> None:
        if resource.plural == "namespaces" and not created.is_set():
            # kopf's first listing is done; its watcher's listing is next: the window.
            cluster.kubectl("create", "namespace", name)
            created.set()
        await real_watcher(resource=resource, **kwargs)

    monkeypatch.setattr(queueing, "watcher", watcher_after_a_namespace_appears)

    registry = kopf.OperatorRegistry()
    seen: list[tuple[str, str]] = []

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())

    @kopf.on.event("v1", "configmaps", registry=registry)
    def on_configmap(namespace: str, name: str, **_: Any) -> None:
        seen.append((namespace, name))

    insights = Insights()
    try:
        with kopf_in_a_thread(registry, "kro-race-*", insights):
            deadline = time.monotonic() + 30
            while not created.is_set() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert created.is_set(), "kopf never started its namespace watcher"
            cluster.kubectl("create", "configmap", "hello", "-n", name)
            while (name, "hello") not in seen and time.monotonic() < deadline:
                time.sleep(0.1)
            assert (name, "hello") in seen, (
                f"kopf never watched {name}, created between its two namespace listings"
                f"; it watches {sorted(map(str, insights.namespaces))}")
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
