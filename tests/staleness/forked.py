"""Processes forked from one pre-imported server, for tests that kill and restart processes many times.

`rollout-runtime run`, the simulated engine and the trainer each import transformers (and with it torch):
about ten seconds per start on a loaded two-core machine, most of a staleness run. Started through
multiprocessing's forkserver with those modules preloaded, a (re)start costs milliseconds. Each is
still its own process, running the module's `__main__` exactly as `python -m module` would, with its
output in its own log file, and SIGKILL kills it for real.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import signal
import sys
import warnings
from typing import Any

PRELOAD = ["transformers", "rollout_runtime.cli", "rollout_runtime.runner", "rollout_runtime.engines.sim",
           "rollout_runtime.reader", "rollout_runtime.weights.publish", "tests.staleness.trainer_proc"]
_CONTEXT: Any = None


def _context() -> Any:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(PRELOAD)
    return _CONTEXT


def _main(module: str, argv: list[str], log: str, env: dict[str, str]) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = [module, *argv]
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")  # the module was preloaded: expected
    runpy.run_module(module, run_name="__main__", alter_sys=True)


class Forked:
    """`python -m module argv...` as a forked process, with the part of Popen's interface the tests use."""

    def __init__(self, module: str, argv: list[str], log: str, env: dict[str, str]) -> None:
        self.process = _context().Process(target=_main, args=(module, argv, log, env), daemon=True)
        self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self) -> int | None:
        code = self.process.exitcode
        return None if code is None else int(code)

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.returncode
