"""Names of the files a commit refers to: rollout batches and buffer blobs, unique per writer.

Why names carry the writer. A runtime that the API server considers gone can keep running (a
partitioned node, a force-deleted pod, or a pod that the Job controller replaced within the same
attempt). Fencing stops its *commit*, but a file it writes before committing used to go to the
same deterministic name as the current attempt's, so it could replace a batch already committed.
Now every process that writes takes a writer id, `a{attempt}-{random hex}`, and puts it in every
name it writes:

    rollout_{id:06d}.{writer}.{jsonl|parquet}     a batch
    buffer_{id:06d}.{writer}.json                 an offloaded partial-rollout buffer
    eval_{id:06d}.{writer}.json                   an eval report (eval_initial.{writer}.json: the one
                                                  before rollout 0)

Files are published create-exclusive (`rollout_runtime.atomic_write.publish_bytes`), so even a
collision could not replace anything. Which file is *the* batch of a rollout id is decided by the
commit alone: the state records, per run of consecutive rollout ids, the writer that committed
them (`WriterSpan`), so `batch_name(state, id)` is deterministic and the state stays small (one
entry per restart, not per rollout); eval reports, a few per run, are named one by one
(`RolloutState.evals`). Readers go through the commit, never through a listing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

BATCH_PREFIX = "rollout_"
BLOB_PREFIX = "buffer_"
EVAL_PREFIX = "eval_"
#: The eval key of the eval before rollout 0 (slime numbers it 0, as it does the eval after rollout 0).
INITIAL_EVAL = -1
BATCH_FORMATS = ("jsonl", "parquet")

_WRITER = r"a(?P<attempt>\d+)-(?P<token>[0-9a-f]{6,32})"
_BATCH_RE = re.compile(rf"^{BATCH_PREFIX}(?P<id>\d{{6,}})\.(?P<writer>{_WRITER})\.(?P<ext>jsonl|parquet)$")
_BLOB_RE = re.compile(rf"^{BLOB_PREFIX}(?P<id>\d{{6,}})\.(?P<writer>{_WRITER})\.json$")
_EVAL_RE = re.compile(rf"^{EVAL_PREFIX}(?P<id>\d{{6,}}|initial)\.(?P<writer>{_WRITER})\.json$")
_WRITER_RE = re.compile(rf"^{_WRITER}$")


@dataclass(frozen=True)
class Writer:
    """One writing process: its attempt and a random token, unique among the job's writers."""

    attempt: int
    token: str

    @classmethod
    def new(cls, attempt: int) -> Writer:
        return cls(attempt, secrets.token_hex(3))

    @property
    def id(self) -> str:
        return f"a{self.attempt}-{self.token}"


def writer_attempt(writer_id: str) -> int | None:
    """The attempt a writer id belongs to, or None if it is not one."""
    m = _WRITER_RE.match(writer_id)
    return int(m["attempt"]) if m else None


def batch_file_name(rollout_id: int, writer_id: str, fmt: str) -> str:
    """`rollout_{id:06d}.{writer}.{fmt}`; an empty writer is the name runtimes before writer ids used."""
    if not writer_id:
        return f"{BATCH_PREFIX}{rollout_id:06d}.{fmt}"
    return f"{BATCH_PREFIX}{rollout_id:06d}.{writer_id}.{fmt}"


_LEGACY_BATCH_RE = re.compile(rf"{BATCH_PREFIX}\d{{6,}}\.(?P<ext>jsonl|parquet)$")


def legacy_spans(last_batch: str | None) -> list[WriterSpan]:
    """For a state committed before writer ids (no spans, `last_batch` named `rollout_{id:06d}.{fmt}`):
    one span with the empty writer, so its batches keep their names."""
    m = _LEGACY_BATCH_RE.search(last_batch or "")
    return [WriterSpan(first_rollout_id=0, writer="", format=m["ext"])] if m else []


def blob_file_name(rollout_id: int, writer_id: str) -> str:
    return f"{BLOB_PREFIX}{rollout_id:06d}.{writer_id}.json"


def eval_label(key: int) -> str:
    """`initial` for the eval before rollout 0, else the rollout id in six digits."""
    return "initial" if key == INITIAL_EVAL else f"{key:06d}"


def eval_file_name(key: int, writer_id: str) -> str:
    return f"{EVAL_PREFIX}{eval_label(key)}.{writer_id}.json"


def join_url(folder: str, name: str) -> str:
    """`folder/name` for a path or an fsspec URL."""
    return f"{str(folder).rstrip('/')}/{name}"


@dataclass(frozen=True)
class Artifact:
    """A file name this runtime writes, parsed: a batch, a blob, an eval report, or a temporary file."""

    name: str
    kind: str  # "batch" | "blob" | "eval" | "temp"
    rollout_id: int = -1  # an eval's key: INITIAL_EVAL for the one before rollout 0
    writer: str = ""
    ext: str = ""

    @property
    def attempt(self) -> int | None:
        return writer_attempt(self.writer) if self.writer else None


def parse_artifact(name: str) -> Artifact | None:
    """What a file name in the output or blob folder is; None for anything else (left alone)."""
    if name.startswith(".") and name.endswith(".tmp") and name[1:].startswith((BATCH_PREFIX, BLOB_PREFIX, EVAL_PREFIX)):
        return Artifact(name, "temp")
    if m := _BATCH_RE.match(name):
        return Artifact(name, "batch", int(m["id"]), m["writer"], m["ext"])
    if m := _BLOB_RE.match(name):
        return Artifact(name, "blob", int(m["id"]), m["writer"], "json")
    if m := _EVAL_RE.match(name):
        key = INITIAL_EVAL if m["id"] == "initial" else int(m["id"])
        return Artifact(name, "eval", key, m["writer"], "json")
    return None


class WriterSpan(BaseModel):
    """Rollout ids from `first_rollout_id` up to the next span's first were committed by `writer`."""

    model_config = ConfigDict(extra="allow")

    first_rollout_id: int
    writer: str
    format: str


def extend_spans(spans: Sequence[WriterSpan], rollout_id: int, writer_id: str, fmt: str) -> list[WriterSpan]:
    """The spans after `writer_id` commits `rollout_id`: a new span only when the writer changes."""
    out = list(spans)
    if out and out[-1].writer == writer_id and out[-1].format == fmt:
        return out
    return [*out, WriterSpan(first_rollout_id=rollout_id, writer=writer_id, format=fmt)]


def span_for(spans: Sequence[WriterSpan], rollout_id: int) -> WriterSpan | None:
    """The span that covers `rollout_id` (the last one starting at or before it)."""
    found = None
    for span in spans:
        if span.first_rollout_id <= rollout_id:
            found = span
        else:
            break
    return found


def committed_batch_name(spans: Sequence[WriterSpan], last_committed: int, rollout_id: int) -> str | None:
    """The file name of committed batch `rollout_id`, or None when no commit names one."""
    if rollout_id > last_committed:
        return None
    span = span_for(spans, rollout_id)
    return batch_file_name(rollout_id, span.writer, span.format) if span else None
