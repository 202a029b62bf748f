"""The `kubectl get` columns of both kinds (a CRD's additionalPrinterColumns).

They are what users read first, so they live here, by name, rather than inside each CRD's
metadata: `crdgen` copies them into `crds/*.yaml`. Priority-1 columns appear with `-o wide`.
A column reads a status field, so adding one usually means adding that field to the kind's
`*_status.py` model as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollout_operator.api.rolloutjob_status import JobPhase
from rollout_operator.api.sglangpool_status import PoolConditionType


@dataclass(frozen=True)
class PrinterColumn:
    """One additionalPrinterColumns entry."""

    name: str
    type: str
    json_path: str
    description: str = ""
    priority: int = 0
    format: str | None = None

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        if self.format:
            out["format"] = self.format
        return out


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")

ROLLOUTJOB_COLUMNS: tuple[PrinterColumn, ...] = (
    PrinterColumn("Phase", "string", ".status.phase", ", ".join(JobPhase)),
    PrinterColumn("Reason", "string", ".status.reason", "Why the phase (e.g. WaitingForWeights while Running)"),
    PrinterColumn("Pool", "string", ".spec.poolRef.name", "SGLangPool"),
    PrinterColumn("Rollout", "integer", ".status.rolloutId", "Last committed rollout id"),
    PrinterColumn("Total", "integer", ".status.numRollouts", "Rollouts in total"),
    PrinterColumn("Completed", "integer", ".status.completed", "Samples completed"),
    PrinterColumn("Aborted", "integer", ".status.aborted", "Samples aborted"),
    PrinterColumn("Filtered", "integer", ".status.filtered", "Samples filtered", priority=1),
    PrinterColumn("Attempt", "integer", ".status.attempt", "Current attempt", priority=1),
    PrinterColumn("Waits-For", "integer", ".status.waitingForWeightVersion",
                  "Weight version the runtime waits for (maxStaleness)", priority=1),
    PrinterColumn("Weights", "integer", ".status.servedWeightVersion", "Served weight version the runtime last read",
                  priority=1),
    PrinterColumn("Stale", "integer", ".status.stale", "Samples too stale for maxStaleness", priority=1),
    PrinterColumn("Endpoint", "string", ".status.endpoint", "Engine URL", priority=1),
    AGE,
)

SGLANGPOOL_COLUMNS: tuple[PrinterColumn, ...] = (
    PrinterColumn("Ready", "string", f'.status.conditions[?(@.type=="{PoolConditionType.READY}")].status',
                  "Whether the pool serves requests"),
    PrinterColumn("Replicas", "integer", ".spec.replicas", "Desired servers"),
    PrinterColumn("Available", "integer", ".status.availableReplicas", "Servers available"),
    PrinterColumn("Weights", "integer", ".status.weightVersion", "Weight version every ready server serves"),
    PrinterColumn("Model", "string", ".spec.model.path", "Model path", priority=1),
    PrinterColumn("Endpoint", "string", ".status.endpoint", "URL for RolloutJobs", priority=1),
    AGE,
)
