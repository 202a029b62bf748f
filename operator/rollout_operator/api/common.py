"""Building blocks shared by both kinds: the model base, the typed resource, conditions, pass-through types.

Kubernetes core types (tolerations, env, volumes, resources) are modelled narrowly: the fields a
user commonly writes are typed so that `kubectl apply` catches mistakes, and the deep, fast-moving
parts (affinity, volume sources, valueFrom) are kept as opaque objects
(`x-kubernetes-preserve-unknown-fields`). Embedding the full PodSpec schema would make the CRDs
hundreds of KiB (KubeRay's problem) for little benefit: the API server validates those parts when
the operator creates the Deployment or Job, and the operator reports such errors in status.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, WithJsonSchema
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


# Quantities ("500m", "16Gi", 2) are int-or-string in Kubernetes. Checked twice, both naming the
# field: by CEL at `kubectl apply` (Kubernetes' own `isQuantity`), and here, for objects stored
# under an older CRD. Without either, the API server refuses the child with a decoding error that
# quotes a regex and names no field at all.
QUANTITY_RE = re.compile(r"^\+?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
QUANTITY_HINT = "a non-negative Kubernetes quantity such as 500m, 2, 512Mi or 16Gi"


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, bool) or (isinstance(value, int) and value < 0) or (
            isinstance(value, str) and not QUANTITY_RE.match(value)):
        raise ValueError(f"{value!r} is not {QUANTITY_HINT}")
    return value


Quantity = Annotated[int | str, AfterValidator(_check_quantity), WithJsonSchema({
    "x-kubernetes-int-or-string": True,
    "maxLength": 64,
    "x-kubernetes-validations": [{
        "rule": "type(self) == int ? self >= 0 : isQuantity(self) && !quantity(self).isLessThan(quantity('0'))",
        "messageExpression": f"\"'\" + string(self) + \"' is not {QUANTITY_HINT}\"",
    }],
})]
# Bounds that keep the CEL rules' estimated cost within the API server's budget.
MAX_RESOURCES = 16
MAX_ENV = 256
MAX_VOLUMES = 64
# Opaque Kubernetes objects (affinity, volume sources, valueFrom): any object, validated by the API
# server when the child is created.
OpaqueObject = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})]


# --------------------------------------------------------------------------- resources


class ObjectMeta(ApiModel):
    """The part of `metadata` the operator reads (builders need name, namespace and uid for owner refs)."""

    name: str
    namespace: str
    uid: str
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None


class CustomResource(ApiModel):
    """One of our objects, parsed once per reconcile and handed to the deciders and builders.

    Subclasses add typed `spec` and `status`. The spec exactly as stored is kept too (`raw_spec`):
    the runtime validates those very sections itself (the operator repeats that check before
    starting it), and engine settings are passed to it as written (2, not 2.0).
    """

    api_version: str
    kind: str
    metadata: ObjectMeta
    _raw_spec: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Self:
        """Parse an object as the API server (or kopf's index) returns it; raises pydantic's ValidationError."""
        parsed = cls.model_validate({k: v for k, v in body.items() if v is not None})
        parsed._raw_spec = dict(body.get("spec") or {})
        return parsed

    @property
    def raw_spec(self) -> dict[str, Any]:
        return self._raw_spec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


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

    requests: dict[str, Quantity] | None = Field(None, description="Minimum resources, e.g. cpu: 4, memory: 32Gi.",
                                                 max_length=MAX_RESOURCES)
    limits: dict[str, Quantity] | None = Field(None, description="Maximum resources.", max_length=MAX_RESOURCES)


class EnvVar(ApiModel):
    """An environment variable, as in a container spec."""

    # Kubernetes 1.34's rule (RelaxedEnvironmentVariableValidation): printable ASCII, no '='.
    name: str = Field(description="Variable name: printable ASCII characters other than '='.", min_length=1,
                      max_length=256, json_schema_extra=x(validations=[rule(
                          "self.matches('^[ -<>-~]+$')",
                          "an environment variable name is printable ASCII characters other than '='",
                          message_expression="\"'\" + self + \"' is not a valid environment variable name: use "
                                             "printable ASCII characters other than '=' (the value goes in value)\"")]))
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

    name: str = Field(description="Name of a volume in `volumes`.", min_length=1, max_length=63)
    mount_path: str = Field(description="Path in the container.", min_length=1)
    sub_path: str | None = Field(None, description="Path inside the volume.")
    read_only: bool | None = Field(None, description="Mount read-only.")


class Volume(ApiModel):
    """A pod volume (the `name` plus one volume source such as persistentVolumeClaim)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})

    name: str = Field(description="Volume name, referenced by volumeMounts.", min_length=1, max_length=63)


def mounts_need_volumes(builtin: str = "[]") -> dict[str, Any]:
    """CEL rule: every volumeMount names a volume in `volumes` (or one of the `builtin` names).

    Without it the API server refuses the child Deployment or Job, which a pool would only show
    in the operator's log, and a job only after the operator tried to create its pod.
    """
    known = f"{builtin} + (has(self.volumes) ? self.volumes.map(v, v.name) : [])"
    return rule(
        f"!has(self.volumeMounts) || self.volumeMounts.all(m, m.name in {known})",
        "a volumeMounts[].name names no volume in volumes: add the volume, or fix the mount's name (a message naming "
        "the mount would exceed the API server's CEL cost budget)",
        field_path=".volumeMounts")


def validation_message(exc: ValidationError) -> str:
    """A pydantic error about an object as the user would fix it: `spec.a.b: what is wrong` per error."""
    parts = []
    for err in exc.errors():
        path = ""
        for item in err["loc"]:
            path += f"[{item}]" if isinstance(item, int) else (f".{item}" if path else str(item))
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{path}: {msg}" if path else msg)
    return "; ".join(parts)


class Scheduling(ApiModel):
    """Where pods may run."""

    node_selector: dict[str, str] | None = Field(None, description="Node labels the pods require.")
    tolerations: list[Toleration] | None = Field(None, description="Taints the pods tolerate.")
    affinity: OpaqueObject | None = Field(None, description="Pod affinity rules (a core/v1 Affinity).")
    priority_class_name: str | None = Field(None, description="PriorityClass of the pods.")
    scheduler_name: str | None = Field(None, description="Scheduler that places the pods (e.g. volcano).")
