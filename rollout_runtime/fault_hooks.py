"""Fault injection for tests, read from the environment: kill or pause the runtime at exact points.

Each hook is off unless its variable is set, and costs one dict lookup when it is. They exist so
that tests (and people checking a deployment) can put a real runtime process exactly where a
crash or a stall is most dangerous, instead of hoping a random kill lands there:

- `KUBEROLLOUT_CRASH_AFTER_WRITE=ID`: exit (as if SIGKILLed, code 137) after publishing rollout
  ID's batch and before committing it.
- `KUBEROLLOUT_CRASH_DURING_WRITE=ID`: exit while rollout ID's batch is written (its bytes are in
  the temporary file, not yet published), leaving the temporary file behind.
- `KUBEROLLOUT_CRASH_BEFORE_EVAL=ID`: exit after committing rollout ID and before the eval that
  follows it (slime's `--eval-interval`), so that no commit records that eval.
- `KUBEROLLOUT_PAUSE_BEFORE_WRITE=ID:SECONDS` (ID may be `*`): sleep after the pre-write fence
  check and before publishing, as a process stalled there (GC pause, stopped VM, partitioned node)
  would: the case where only the commit's own check stands between a stale writer and the data.
  A test can freeze the process there (SIGSTOP) for as long as it likes; SIGCONT ends the pause at
  once, so the process goes on exactly when the test resumes it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

CRASH_AFTER_WRITE_ENV = "KUBEROLLOUT_CRASH_AFTER_WRITE"
CRASH_DURING_WRITE_ENV = "KUBEROLLOUT_CRASH_DURING_WRITE"
PAUSE_BEFORE_WRITE_ENV = "KUBEROLLOUT_PAUSE_BEFORE_WRITE"
CRASH_BEFORE_EVAL_ENV = "KUBEROLLOUT_CRASH_BEFORE_EVAL"

#: The exit code of a hook's crash: what a SIGKILLed container reports.
CRASH_EXIT_CODE = 137


def _hits(env: str, rollout_id: int) -> bool:
    value = os.environ.get(env)
    return value is not None and value.strip() == str(rollout_id)


def _crash(env: str, rollout_id: int, where: str) -> None:
    log.error("%s=%d: exiting %s", env, rollout_id, where)
    logging.shutdown()
    os._exit(CRASH_EXIT_CODE)


def crash_after_write(rollout_id: int) -> None:
    if _hits(CRASH_AFTER_WRITE_ENV, rollout_id):
        _crash(CRASH_AFTER_WRITE_ENV, rollout_id, "between batch write and commit")


def crash_before_eval(rollout_id: int) -> None:
    if _hits(CRASH_BEFORE_EVAL_ENV, rollout_id):
        _crash(CRASH_BEFORE_EVAL_ENV, rollout_id, "between the commit and its eval")


def crash_during_write(rollout_id: int) -> Callable[[], None] | None:
    """A `before_publish` callback that exits, for the targeted rollout id; else None."""
    if not _hits(CRASH_DURING_WRITE_ENV, rollout_id):
        return None
    return lambda: _crash(CRASH_DURING_WRITE_ENV, rollout_id, "with the batch in its temporary file")


def pause_before_write(rollout_id: int) -> None:
    value = os.environ.get(PAUSE_BEFORE_WRITE_ENV)
    if not value or ":" not in value:
        return
    target, seconds = value.split(":", 1)
    if target.strip() not in ("*", str(rollout_id)):
        return
    continued = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        # Installed before the line that tells a test where we are: it may stop us right after it.
        previous = signal.signal(signal.SIGCONT, lambda signum, frame: continued.set())
    try:
        log.warning("%s=%s: pausing %ss before writing rollout %d", PAUSE_BEFORE_WRITE_ENV, value, seconds, rollout_id)
        deadline = time.monotonic() + float(seconds)
        while not continued.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        if continued.is_set():
            log.warning("%s: continued (SIGCONT) before writing rollout %d", PAUSE_BEFORE_WRITE_ENV, rollout_id)
    finally:
        if previous is not None:
            signal.signal(signal.SIGCONT, previous)
