"""Posting Kubernetes Events on our objects (`kubectl describe` shows them), and counting them.

The reconcilers return events only on transitions, so each is posted once; a failure to post
is logged and otherwise ignored (an Event is a notification, never state).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from rollout_operator.constants import MANAGED_BY
from rollout_operator.kube import ApiError, KubeClient, resource_path
from rollout_operator.metrics import Metrics
from rollout_operator.reconcile.common import Event
from rollout_runtime.contract import API_VERSION, GROUP, format_time

log = logging.getLogger("rollout_operator")


class EventRecorder:
    def __init__(self, client: KubeClient, metrics: Metrics) -> None:
        self.client = client
        self.metrics = metrics
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    async def post(self, body: dict[str, Any], kind: str, events: list[Event]) -> None:
        if not events:
            return
        meta = body["metadata"]
        stamp = format_time()
        for ev in events:
            log.log(logging.WARNING if ev.type == "Warning" else logging.INFO, "%s %s/%s: %s: %s", kind,
                    meta["namespace"], meta["name"], ev.reason, ev.message)
            self.metrics.events.labels(kind, ev.type, ev.reason).inc()
            event = {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"apiVersion": API_VERSION, "kind": kind, "name": meta["name"],
                                   "namespace": meta["namespace"], "uid": meta["uid"]},
                "type": ev.type,
                "reason": ev.reason,
                "message": ev.message[:1024],
                "source": {"component": MANAGED_BY},
                "reportingComponent": f"{GROUP}/operator",
                "reportingInstance": self.instance,
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
            }
            try:
                await self.client.request("POST", resource_path("v1", "Event", meta["namespace"]), event)
            except (TimeoutError, ApiError, OSError) as exc:
                log.debug("could not post event %s: %s", ev.reason, exc)
