"""The serving side of the real loop, as local processes: dev engines, the real SGLang router, the runtime.

The same parts examples/quickstart.sh starts (console scripts of this checkout, `python -m
sglang_router.launch_router`), owned by one context manager so that every process is stopped, in
reverse order, however the trainer ends. Each process logs to a file in `logs/`; a process that dies
is reported with the tail of its log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessDied(RuntimeError):
    """A process of the stack exited; the message carries its log's tail."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise ProcessDied(f"{self.name} exited with code {code}; the end of {self.log}:\n{self.tail()}")


@dataclass
class Stack:
    """Engines + router + runtime; `with Stack(...) as s:` starts what `start_*` asks and stops it all."""

    logs: Path
    procs: list[Proc] = field(default_factory=list)
    engine_urls: list[str] = field(default_factory=list)
    router_url: str | None = None

    def __enter__(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        fh = open(log, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        popen = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                 start_new_session=True)
        fh.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: Proc, url: str, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc.check()
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{proc.name} not ready at {url} after {timeout:.0f}s; "
                           f"the end of {proc.log}:\n{proc.tail()}")

    def start_engines(self, model: str, count: int, *, version: int = 0, threads: int = 1,
                      max_batch_size: int = 16) -> list[str]:
        """`count` dev engines serving `model` as weight version `version`, started together."""
        started = []
        for i in range(count):
            port = free_port()
            argv = [sys.executable, "-m", "rollout_runtime.cli", "dev-engine", "--model", model, "--host", "127.0.0.1",
                    "--port", str(port), "--threads", str(threads), "--seed", str(i + 1),
                    "--weight-version", str(version), "--max-batch-size", str(max_batch_size)]
            started.append((self._spawn(f"engine{i + 1}", argv), f"http://127.0.0.1:{port}"))
        for proc, url in started:
            self.wait_ready(proc, f"{url}/health_generate")
            self.engine_urls.append(url)
        return list(self.engine_urls)

    def start_router(self) -> str:
        """The real sglang-router 0.3.2 in front of the engines (round_robin, as the quickstart)."""
        port, metrics = free_port(), free_port()
        argv = [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *self.engine_urls,
                "--host", "127.0.0.1", "--port", str(port), "--policy", "round_robin",
                "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics)]
        proc = self._spawn("router", argv)
        self.router_url = f"http://127.0.0.1:{port}"
        self.wait_ready(proc, f"{self.router_url}/readiness")
        return self.router_url

    def start_runtime(self, config: Path, flags: list[str], cwd: Path) -> Proc:
        """`rollout-runtime run --config CONFIG FLAGS...` in the background (its log: logs/runtime.log)."""
        argv = [sys.executable, "-m", "rollout_runtime.cli", "run", "--config", str(config), "--no-progress", *flags]
        return self._spawn("runtime", argv, cwd=cwd)

    def check(self) -> None:
        for proc in self.procs:
            if proc.name != "runtime":  # the runtime exits 0 when it has produced every rollout
                proc.check()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()
