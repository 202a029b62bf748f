"""The operator–runtime contract: every fact that both sides read or write, in one place.

The operator (`rollout_operator`) starts the runtime in a pod and reads what the runtime commits;
the runtime (`rollout_runtime`) reads its RolloutJob and commits to the state ConfigMap. Anything
that has to be spelled the same on both sides lives here, and only here: the API group and kinds,
the attempt number's environment variable and fencing annotation, the state ConfigMap's name and
its keys (one encode/decode pair for the flat keys), the spec sections the runtime reads, and the
exit codes the operator maps to retry decisions.

Layer rule: this module imports nothing but the standard library, so both sides (and the operator
image, which carries no runtime dependencies) can import it freely and no import loop can run
through it. New shared facts (weight versions, staleness, consumption) are added here, not copied.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

# ---------------------------------------------------------------------------- API identity

GROUP: Final = "kuberollout.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
JOB_KIND: Final = "RolloutJob"
JOB_PLURAL: Final = "rolloutjobs"
POOL_KIND: Final = "SGLangPool"
POOL_PLURAL: Final = "sglangpools"

# ------------------------------------------------------------------- attempts and fencing

#: The attempt number of the runtime pod (1, 2, ...), set by the operator on the Job's pod.
ATTEMPT_ENV: Final = "KUBEROLLOUT_ATTEMPT"
#: On the state ConfigMap: the newest attempt allowed to commit (a fencing token, only ever raised).
ATTEMPT_ANNOTATION: Final = "kuberollout.io/attempt"


def attempt_from_env(environ: dict[str, str] | Any) -> int | None:
    """The pod's attempt number from its environment, or None outside the operator."""
    value = environ.get(ATTEMPT_ENV)
    return int(value) if value and value.isdigit() else None


def fence_allows(fence: str | None, attempt: int | None) -> bool:
    """Whether a runtime of `attempt` may still read/commit under the ConfigMap's `fence` annotation."""
    if attempt is None or not fence or not fence.isdigit():
        return True
    return int(fence) <= attempt


# --------------------------------------------------------------------------- the state ConfigMap

STATE_SUFFIX: Final = "-state"
#: The full RolloutState as JSON (the buffer is offloaded to a blob; see rollout_runtime.state.buffer_blobs).
STATE_KEY: Final = "state.json"


#: Flat key on the state ConfigMap written by the trainer (`rollout_runtime.reader.RolloutReader.ack`,
#: with the trainer's credentials) and read by the runtime: the highest rollout id the trainer is
#: done with. Never part of a commit: the runtime's merge patches do not touch it, so the fenced
#: commit stays the runtime's alone. Retention (`output.keepLast`) never deletes a batch above it.
CONSUMED_KEY: Final = "consumed"


def decode_consumed(data: dict[str, str] | None) -> int:
    """The trainer's consumption mark from the state ConfigMap's data; -1 when none (or malformed)."""
    raw = (data or {}).get(CONSUMED_KEY, "")
    try:
        return int(raw)
    except ValueError:
        return -1


def state_configmap_name(job: str) -> str:
    """`<job>-state`: created by the operator, written by the runtime."""
    return f"{job}{STATE_SUFFIX}"


@dataclass(frozen=True)
class CommitSummary:
    """What the flat keys of the state ConfigMap say about the last commit.

    The runtime encodes it next to `state.json` on every commit; the operator decodes it (from its
    slim copy of the ConfigMap, which holds only these keys) and mirrors it into the RolloutJob's
    status; `kubectl get cm <job>-state -o yaml` shows it without parsing JSON. Counts are
    cumulative, in samples. `rollout_id` is -1 before the first rollout is committed.
    """

    rollout_id: int = -1
    num_rollouts: int | None = None
    completed: int = 0
    aborted: int = 0
    filtered: int = 0
    attempt: int = 0
    finished: bool = False
    last_commit_time: str | None = None
    last_batch: str | None = None
    # Bounded staleness (spec.rollout.maxStaleness): samples dropped or regenerated because they held tokens
    # older than the bound (cumulative), and the weight versions the last committed batch's tokens came from.
    stale: int = 0
    weight_version_min: int | None = None
    weight_version_max: int | None = None


#: CommitSummary field -> flat ConfigMap key (also the RolloutJob status field it is mirrored to).
FLAT_KEYS: Final[dict[str, str]] = {
    "rollout_id": "rolloutId",
    "num_rollouts": "numRollouts",
    "completed": "completed",
    "aborted": "aborted",
    "filtered": "filtered",
    "attempt": "attempt",
    "finished": "finished",
    "last_commit_time": "lastCommitTime",
    "last_batch": "lastBatch",
    "stale": "stale",
    "weight_version_min": "weightVersionMin",
    "weight_version_max": "weightVersionMax",
}
_INT_FIELDS = {"rollout_id", "num_rollouts", "completed", "aborted", "filtered", "attempt", "stale",
               "weight_version_min", "weight_version_max"}


def _encode(obj: Any, keys: dict[str, str]) -> dict[str, str]:
    """A flat dataclass as ConfigMap strings: bools as "true"/"false", None as ""."""
    out: dict[str, str] = {}
    for name, key in keys.items():
        value = getattr(obj, name)
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = "" if value is None else str(value)
    return out


def _decode(cls: Any, data: dict[str, str], keys: dict[str, str], ints: set[str], bools: set[str]) -> Any:
    """Inverse of `_encode`; missing or malformed keys take their defaults."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = data.get(keys[f.name])
        if raw is None or raw == "":
            continue
        if f.name in bools:
            values[f.name] = raw == "true"
        elif f.name in ints:
            try:
                values[f.name] = int(raw)
            except ValueError:
                continue
        else:
            values[f.name] = raw
    return cls(**values)


def encode_flat(summary: CommitSummary) -> dict[str, str]:
    """The flat `data` keys for a commit (ConfigMap values are strings; absent values are "")."""
    return _encode(summary, FLAT_KEYS)


def decode_flat(data: dict[str, str] | None) -> CommitSummary | None:
    """Inverse of `encode_flat`; None when the ConfigMap holds no commit yet.

    Tolerant of missing or malformed keys (an older runtime, a hand edit): those take their
    defaults rather than failing a reconcile.
    """
    data = data or {}
    if not any(key in data for key in FLAT_KEYS.values()):
        return None
    return _decode(CommitSummary, data, FLAT_KEYS, _INT_FIELDS, {"finished"})


def summary_dict(summary: CommitSummary) -> dict[str, Any]:
    """The summary keyed by the flat (camelCase) names, typed, for tools and tests."""
    return {FLAT_KEYS[k]: v for k, v in asdict(summary).items()}


@dataclass(frozen=True)
class WeightWait:
    """The runtime's wait for newer weights (bounded staleness), as it stands now; not part of a commit.

    The runtime patches these flat keys into the state ConfigMap when it starts waiting and again when
    it resumes (`waiting_for` back to None); the operator mirrors them into the RolloutJob's status
    and, while `waiting_for` is set by the current attempt, shows the phase Running with the reason
    `WaitingForWeights`. `served` is the version the runtime last read (the pool's
    `status.weightVersion`, or the lowest `weight_version` of the engines).
    """

    waiting_for: int | None = None
    served: int | None = None
    rollout_id: int | None = None
    attempt: int | None = None
    since: str | None = None


#: WeightWait field -> flat ConfigMap key.
WAIT_KEYS: Final[dict[str, str]] = {
    "waiting_for": "waitingForWeightVersion",
    "served": "servedWeightVersion",
    "rollout_id": "waitingRolloutId",
    "attempt": "waitingAttempt",
    "since": "waitingSince",
}


def encode_wait(wait: WeightWait) -> dict[str, str]:
    """The flat `data` keys of a wait report (merged into the state ConfigMap, beside the commit's)."""
    return _encode(wait, WAIT_KEYS)


def decode_wait(data: dict[str, str] | None) -> WeightWait | None:
    """Inverse of `encode_wait`; None when the runtime never reported one."""
    data = data or {}
    if not any(key in data for key in WAIT_KEYS.values()):
        return None
    return _decode(WeightWait, data, WAIT_KEYS, {"waiting_for", "served", "rollout_id", "attempt"}, set())


# ------------------------------------------------------------------------- the runtime's input

#: RolloutJob spec sections that the runtime reads (with RolloutConfig.from_sections). The `engine`
#: section is operator-owned: the operator passes its settings as flags (the URL comes from the pool).
RUNTIME_SECTIONS: Final = ("dataset", "rollout", "reward", "filters", "eval", "output")
#: Every section whose fields come from RolloutConfig metadata.
CONFIG_SECTIONS: Final = (*RUNTIME_SECTIONS, "engine")

# ------------------------------------------------------------------------------ timestamps


def format_time(when: datetime | None = None) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes metav1.Time (`2026-01-02T03:04:05Z`).

    The one timestamp format of commits, status fields and conditions (now when `when` is None).
    """
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    """Inverse of `format_time`, also accepting other ISO 8601 forms; None when absent or unparsable."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# ------------------------------------------------------------------------- weight versions

#: The `weight_version` of an SGLang server started without `--weight-version` (its own weights).
INITIAL_WEIGHT_VERSION: Final = "default"


def weight_version_wire(version: int) -> str:
    """The `weight_version` string sent to SGLang for a policy version (the trainer's step)."""
    return str(version)


def parse_weight_version(value: Any) -> int | None:
    """A served `weight_version` as a policy version: "default" (the model's own weights) is 0, "N" is N.

    None for anything else (a version someone set by hand, such as "v2-rc"): it is not a version
    of ours, so it never counts as the current one.
    """
    if value is None:
        return None
    text = str(value).strip()
    if text == INITIAL_WEIGHT_VERSION:
        return 0
    return int(text) if text.isdigit() else None


# ------------------------------------------------------------------------------ exit codes

#: `rollout-runtime run` exits with this on a configuration error: the same spec fails the same way,
#: so the operator fails the RolloutJob instead of retrying (Job podFailurePolicy FailJob).
EXIT_CONFIG_ERROR: Final = 2
#: `rollout-runtime run` exits with this when the engine (router or server) stays unreachable or keeps
#: failing after the client's retries: nothing is wrong with the spec, so the operator retries the
#: attempt (counted against spec.backoffLimit; a pool job waits for its pool to be Ready again), and
#: the new attempt resumes from the last commit.
EXIT_ENGINE_UNAVAILABLE: Final = 3
#: Exit code of a clean stop on SIGINT/SIGTERM (the next attempt resumes from the last commit).
EXIT_INTERRUPTED: Final = 130

__all__ = [
    "API_VERSION", "ATTEMPT_ANNOTATION", "ATTEMPT_ENV", "CONFIG_SECTIONS", "CONSUMED_KEY", "CommitSummary",
    "EXIT_CONFIG_ERROR", "EXIT_ENGINE_UNAVAILABLE", "EXIT_INTERRUPTED", "FLAT_KEYS", "GROUP", "INITIAL_WEIGHT_VERSION",
    "JOB_KIND", "JOB_PLURAL", "POOL_KIND", "POOL_PLURAL", "RUNTIME_SECTIONS", "STATE_KEY", "STATE_SUFFIX", "VERSION",
    "WAIT_KEYS", "WeightWait", "attempt_from_env", "decode_consumed", "decode_flat", "decode_wait", "encode_flat",
    "encode_wait", "fence_allows", "format_time", "parse_time", "parse_weight_version", "state_configmap_name",
    "summary_dict", "weight_version_wire",
]
