"""What a CRD declares besides its schema: names, scale subresource, printer columns, root CEL rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rollout_operator.api.printer_columns import PrinterColumn


@dataclass(frozen=True)
class CrdInfo:
    """Names, subresources and columns of one kind (the columns are defined in printer_columns.py)."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    scale: dict[str, str] | None = None
    root_rules: tuple[dict[str, Any], ...] = field(default_factory=tuple)
