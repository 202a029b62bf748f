"""Building blocks shared by both kinds: the model base, conditions, and Kubernetes pass-through types.

Kubernetes core types (tolerations, env, volumes, resources) are modelled narrowly: the fields a
user commonly writes are typed so that `kubectl apply` catches mistakes, and the deep, fast-moving
parts (affinity, volume sources, valueFrom) are kept as opaque objects
(`x-kubernetes-preserve-unknown-fields`). Embedding the full PodSpec schema would make the CRDs
hundreds of KiB (KubeRay's problem) for little benefit: the API server validates those parts when
the operator creates the Deployment or Job, and the operator reports such errors in status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

# --------------------------------------------------------------------------- model base


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python.

    Unknown keys are ignored when parsing: the API server has already pruned fields the CRD
    does not declare, and an older operator must not choke on a newer CRD's fields.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              protected_namespaces=())

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it (camelCase, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def x(**extensions: Any) -> dict[str, Any]:
    """`json_schema_extra` carrying Kubernetes schema extensions (x-kubernetes-*, CEL rules)."""
    out: dict[str, Any] = {}
    for key, value in extensions.items():
        out[key if key in ("default", "format", "pattern") else "x-kubernetes-" + key.replace("_", "-")] = value
    return out


def rule(expr: str, message: str, *, field_path: str | None = None, reason: str | None = None,
         message_expression: str | None = None, optional_old_self: bool | None = None) -> dict[str, Any]:
    """One CEL `x-kubernetes-validations` entry."""
    out: dict[str, Any] = {"rule": expr, "message": message}
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    if optional_old_self is not None:
        out["optionalOldSelf"] = optional_old_self
    return out


# Quantities ("500m", "16Gi", 2) are int-or-string in Kubernetes.
Quantity = Annotated[int | str, WithJsonSchema({"x-kubernetes-int-or-string": True})]
# Opaque Kubernetes objects (affinity, volume sources, valueFrom): any object, validated by the API
# server when the child is created.
OpaqueObject = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})]


# --------------------------------------------------------------------------- conditions


class Condition(ApiModel):
    """A `metav1.Condition`: one aspect of the object's state, with when and why it last changed."""

    type: str = Field(description="Condition type, e.g. Ready.", max_length=316)
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str | None = Field(None, description="CamelCase reason for the last transition.", max_length=1024)
    message: str | None = Field(None, description="Human-readable details.", max_length=32768)
    last_transition_time: str | None = Field(None, description="When the status last changed.",
                                             json_schema_extra=x(format="date-time"))
    observed_generation: int | None = Field(None, description="The .metadata.generation this condition was set for.",
                                            ge=0)


Conditions = Annotated[
    list[Condition],
    Field(description="Conditions, one per type (Kubernetes API conventions).",
          json_schema_extra=x(list_type="map", list_map_keys=["type"])),
]


# --------------------------------------------------------------------------- pod settings


class ResourceRequirements(ApiModel):
    """Compute resources (`requests`/`limits`), as in a container spec."""

    requests: dict[str, Quantity] | None = Field(None, description="Minimum resources, e.g. cpu: 4, memory: 32Gi.")
    limits: dict[str, Quantity] | None = Field(None, description="Maximum resources.")


class EnvVar(ApiModel):
    """An environment variable, as in a container spec."""

    name: str = Field(description="Variable name.", min_length=1)
    value: str | None = Field(None, description="Literal value.")
    value_from: OpaqueObject | None = Field(None, description="Source for the value (secretKeyRef, fieldRef, ...).")


class Toleration(ApiModel):
    """A pod toleration, as in a pod spec."""

    key: str | None = Field(None, description="Taint key; empty with operator Exists matches all taints.")
    operator: Literal["Exists", "Equal"] | None = Field(None, description="Exists or Equal (default Equal).")
    value: str | None = Field(None, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects.")
    toleration_seconds: int | None = Field(None, description="For NoExecute: how long the pod stays bound.")


class VolumeMount(ApiModel):
    """A volume mount, as in a container spec."""

    name: str = Field(description="Name of a volume in `volumes`.", min_length=1)
    mount_path: str = Field(description="Path in the container.", min_length=1)
    sub_path: str | None = Field(None, description="Path inside the volume.")
    read_only: bool | None = Field(None, description="Mount read-only.")


class Volume(ApiModel):
    """A pod volume (the `name` plus one volume source such as persistentVolumeClaim)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    name: str = Field(description="Volume name, referenced by volumeMounts.", min_length=1)


class Scheduling(ApiModel):
    """Where pods may run."""

    node_selector: dict[str, str] | None = Field(None, description="Node labels the pods require.")
    tolerations: list[Toleration] | None = Field(None, description="Taints the pods tolerate.")
    affinity: OpaqueObject | None = Field(None, description="Pod affinity rules (a core/v1 Affinity).")
    priority_class_name: str | None = Field(None, description="PriorityClass of the pods.")
    scheduler_name: str | None = Field(None, description="Scheduler that places the pods (e.g. volcano).")


# --------------------------------------------------------------------------- CRD metadata


@dataclass(frozen=True)
class PrinterColumn:
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


@dataclass(frozen=True)
class CrdInfo:
    """What a CRD declares besides the schema: names, subresources, columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    scale: dict[str, str] | None = None
    root_rules: tuple[dict[str, Any], ...] = field(default_factory=tuple)
