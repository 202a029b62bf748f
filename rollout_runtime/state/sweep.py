"""Which runtime files on storage may go, and removing them: leftovers, temp files, released batches.

A file may be deleted only when no commit can ever name it, judged from the committed state and
the fence, never from timing:

- a temporary file (`.rollout_*.tmp`, `.buffer_*.tmp`): a write killed before it published. A
  publish links the bytes to their final name, so removing the temporary name can at worst make a
  stale writer fail before it commits; it can never touch a published file.
- a batch or blob of a rollout id at or below the last commit that the commit does not name: that
  id's commit is final (commits only go forward, each on top of the version it read), so the file
  is a crashed or fenced-off writer's.
- a batch or blob above the last commit, written by an attempt older than the fence: fenced-off
  attempts cannot commit any more. Files of the *current* attempt's other writers (a pod replaced
  within the attempt) are left alone: such a writer may still win its commit. They become
  collectable once the commits pass them.
- a batch at or below `pruned_through`: retention released it (`retention_floor`).
- a blob of an id below the last commit other than the one the state references: superseded.
- an eval report the state names another file for; or, named by no commit, one of an id below the
  last commit (a commit records an eval before the next rollout's), or of a fenced-off attempt.
  An unrecorded report of the last committed id from the current attempt is left alone: its
  writer may still record it.

The runtime sweeps its output and blob folders when it starts (`sweep`), and after each commit
the other files of the id it just committed (`sweep_committed`).

Everything else in the folders (user files, eval reports named `eval_{id:06d}.json` by runtimes
before writer ids, names of other versions) is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import fsspec

from rollout_runtime.state.artifacts import BATCH_PREFIX, EVAL_PREFIX, Artifact, eval_label, join_url, parse_artifact
from rollout_runtime.state.models import RolloutState

log = logging.getLogger(__name__)


def is_garbage(art: Artifact, state: RolloutState | None, fence_attempt: int | None) -> bool:
    """Whether no commit can ever name this file (see the module docstring for the rules)."""
    if art.kind == "temp":
        return True
    committed = state.rollout_id if state else -1
    fenced = fence_attempt is not None and art.attempt is not None and art.attempt < fence_attempt
    if art.kind == "batch":
        if state is not None and art.rollout_id <= state.pruned_through:
            return True
        if art.rollout_id <= committed:
            return state is None or state.batch_name(art.rollout_id) != art.name
        return fenced
    if art.kind == "eval":
        named = state.eval_name(art.rollout_id) if state else None
        if named is not None:
            return named != art.name
        return art.rollout_id < committed or fenced
    ref = state.data_source.buffer_ref if state else None
    if ref and ref.rstrip("/").rsplit("/", 1)[-1] == art.name:
        return False
    return art.rollout_id < committed or fenced


def garbage(names: Iterable[str], state: RolloutState | None, fence_attempt: int | None) -> list[str]:
    """The names among `names` that may be deleted."""
    out = []
    for name in names:
        art = parse_artifact(name)
        if art is not None and is_garbage(art, state, fence_attempt):
            out.append(name)
    return sorted(out)


def retention_floor(last_committed: int, consumed: int, keep_last: int | None, pruned_through: int) -> int:
    """The highest rollout id whose batch may be deleted under `keep_last`.

    At most the trainer's consumption mark (a batch not yet read is never deleted), and never one of
    the last `keep_last` committed batches; never lower than before.
    """
    if keep_last is None:
        return pruned_through
    return max(pruned_through, min(consumed, last_committed - keep_last))


def _names(folder: str, pattern: str | None = None) -> list[str]:
    """Names in `folder` (matching a glob `pattern` if given: one prefix listing on object stores)."""
    fs, path = fsspec.core.url_to_fs(folder)
    try:
        entries = fs.glob(join_url(path, pattern)) if pattern else fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]


def remove(folder: str, names: Iterable[str]) -> int:
    """Delete `names` in `folder` (missing ones are fine); how many were there."""
    fs, path = fsspec.core.url_to_fs(folder)
    count = 0
    for name in names:
        try:
            fs.rm(join_url(path, name))
            count += 1
        except FileNotFoundError:
            continue
    return count


def sweep(folders: Iterable[str], state: RolloutState | None, fence_attempt: int | None) -> int:
    """Remove every file in `folders` that no commit can name; how many were removed."""
    removed = 0
    for folder in dict.fromkeys(folders):  # output and blob folders may be the same
        doomed = garbage(_names(folder), state, fence_attempt)
        if doomed:
            removed += remove(folder, doomed)
            log.info("removed %d leftover file(s) from %s: %s", len(doomed), folder,
                     ", ".join(doomed[:5]) + (" ..." if len(doomed) > 5 else ""))
    return removed


def sweep_committed(output_dir: str, state: RolloutState, fence_attempt: int | None) -> int:
    """After committing `state.rollout_id`: remove the other batch files of that id (now provably garbage).

    Files a stale writer publishes later stay until the next start-up sweep.
    """
    doomed = garbage(_names(output_dir, f"{BATCH_PREFIX}{state.rollout_id:06d}.*"), state, fence_attempt)
    return remove(output_dir, doomed) if doomed else 0


def sweep_committed_eval(output_dir: str, state: RolloutState, key: int, fence_attempt: int | None) -> int:
    """After committing eval report `key`: remove the other reports of that key (now provably garbage)."""
    doomed = garbage(_names(output_dir, f"{EVAL_PREFIX}{eval_label(key)}.*"), state, fence_attempt)
    return remove(output_dir, doomed) if doomed else 0


def release_batches(output_dir: str, state: RolloutState, after: int) -> int:
    """Delete the committed batches that retention released: ids in (after, state.pruned_through]."""
    names = [name for rid in range(after + 1, state.pruned_through + 1) if (name := state.batch_name(rid))]
    return remove(output_dir, names)
