"""The API server refused a child: the observation the controller records, and its message in the user's terms.

The controller cannot decide a phase (only `reconcile/` does), so when the API server refuses a
child (422 Invalid, 400, 403 from a quota or an admission policy) it records a `Rejection` for
the object's generation and reconciles again; the decision fails the object visibly until its
spec changes. `explain` rewrites the API server's field paths (`details.causes[].field`, paths
in the child) as the spec fields the user wrote, with the routes of `builders/field_routes.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rollout_operator.builders.field_routes import Route, spec_field


@dataclass(frozen=True)
class Rejection:
    """The API server refused to create or update child `kind/name` for this generation of our object."""

    generation: int | None
    message: str
    kind: str = ""
    name: str = ""
    causes: tuple[tuple[str, str], ...] = ()  # (field in the child, what is wrong), from details.causes


def explain(rejection: Rejection, routes: Sequence[Route]) -> str:
    """One line per cause, each naming the spec field it comes from (the child's path when none does)."""
    parts = []
    for field, message in rejection.causes:
        path = spec_field(field, routes) if field else None
        if path:
            parts.append(f"{path}: {message}")
        else:
            where = f"{rejection.kind} {rejection.name}".strip()
            parts.append(f"{field or where}: {message}" + (f" (in {where})" if field and where else ""))
    return "; ".join(parts) if parts else rejection.message
