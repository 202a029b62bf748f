"""Fixes to kopf that this operator needs and kopf (1.44 to 1.45.2 at least) does not have yet.

One, for namespace patterns (`--namespace 'team-*'`): kopf lists the namespaces once, then starts
a watcher, which lists them *again* before it watches from that second listing's resourceVersion;
its handler for namespace events drops every event of a listing (`type: None`), as if the first
listing had seen them all. A namespace created between the two listings is in neither's
events: kopf never watches it, and every RolloutJob and SGLangPool in it is ignored until the
operator restarts. The window is short but it is exactly the moment a test suite, or a user
running `helm install` and `kubectl create namespace` together, creates a namespace; the suite
hit it (tests/operator/test_cluster_kopf_namespaces.py reproduces it on a real API server).

The fix treats the watcher's listing as kopf treats the first one (`revise_namespaces` adds the
matching names and is idempotent). It replaces one module-level function that kopf's namespace
observer looks up when it starts; `apply()` must run before `kopf.operator()` (handlers.py calls
it at import, which both `rollout-operator` and `kopf run -m rollout_operator.handlers` do).
Should a kopf release rename what is patched, `apply()` says so in the log and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("rollout_operator")


async def process_discovered_namespace_event(*, raw_event: Any, namespaces: Any, insights: Any, **_: Any) -> None:
    """kopf's handler for namespace events, keeping the events of the watcher's own listing."""
    from kopf._core.reactor import observation

    async with insights.revised:
        observation.revise_namespaces(raw_events=[raw_event], insights=insights, namespaces=namespaces)
        insights.revised.notify_all()


def apply() -> bool:
    """Install the fix into kopf (idempotent); False, with a warning, where kopf has changed shape."""
    try:
        from kopf._core.reactor import observation
    except ImportError:
        log.warning("kopf has no kopf._core.reactor.observation: the namespace-listing fix is not applied")
        return False
    current = getattr(observation, "process_discovered_namespace_event", None)
    if current is None or not hasattr(observation, "revise_namespaces"):
        log.warning("kopf's namespace observer has changed: the namespace-listing fix is not applied")
        return False
    observation.process_discovered_namespace_event = process_discovered_namespace_event
    return True
