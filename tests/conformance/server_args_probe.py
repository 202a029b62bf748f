"""Parse command lines with sglang 0.5.23's real ``ServerArgs.add_cli_args`` parser (run as a script).

Reads a JSON list of argv lists on stdin; prints a JSON list of ``{"ok": bool, "error": str,
"values": {dest: value}}``. Importing ``sglang.srt.server_args`` pulls in the whole package, which
is installed without its dependencies (``--no-deps``): the few it imports at module level and that
argument parsing never calls (psutil, pybase64, zmq, IPython) are stubbed when absent. A separate
process keeps those stubs (and sglang's import-time settings) out of the test process.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import sys
from unittest import mock

STUBBED = ("psutil", "pybase64", "zmq", "IPython")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__, module.__all__ = [], spec, []
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001
        pass


def main() -> int:
    argvs = json.load(sys.stdin)
    missing = {m for m in STUBBED if importlib.util.find_spec(m) is None}
    sys.meta_path.insert(0, _StubFinder(missing))
    from sglang.srt.server_args import ServerArgs

    results = []
    for argv in argvs:
        parser = argparse.ArgumentParser(prog="sglang.launch_server")
        ServerArgs.add_cli_args(parser)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                ns = parser.parse_args(argv)
            values = {k: v for k, v in vars(ns).items() if isinstance(v, (str, int, float, bool, type(None)))}
            results.append({"ok": True, "error": "", "values": values})
        except SystemExit:
            results.append({"ok": False, "error": err.getvalue().strip().splitlines()[-1:], "values": {}})
    json.dump(results, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
