#!/usr/bin/env python3
"""Pin each image's dependencies: docker/requirements-<image>.txt from pyproject.toml.

    python scripts/lock_images.py             re-pin, keeping current pins where they still fit
    python scripts/lock_images.py --upgrade   re-pin everything to the newest allowed versions
    python scripts/lock_images.py operator    only the operator image

Which extras each image carries is `[tool.kuberollout.images]` in pyproject.toml. For each image,
pip resolves `kuberollout[<extras>]` (`pip install --dry-run --ignore-installed --report`, so
nothing is installed and the result does not depend on this environment's packages), and the
file lists every distribution of that resolution but kuberollout itself, `name==version`, with
the packages that pull it in. The Dockerfiles install the file with `--no-deps`, then the project
with `--no-deps`; tests/test_images.py builds the same environments and runs their entry points.

Resolution follows the running interpreter, so run this with the images' Python (the minor
version of the Dockerfiles' PYTHON_IMAGE, on Linux); it refuses to run with another.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import tomllib
from collections import defaultdict
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = "kuberollout"


def images() -> dict[str, list[str]]:
    """Image name -> the extras of kuberollout it carries (pyproject's [tool.kuberollout.images])."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data["tool"]["kuberollout"]["images"]


def requirements_path(image: str) -> Path:
    return REPO / "docker" / f"requirements-{image}.txt"


def image_python(image: str) -> str:
    """The Python minor version of the image's base (`ARG PYTHON_IMAGE=python:3.11-...`)."""
    text = (REPO / "docker" / f"{image}.Dockerfile").read_text()
    m = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)", text, re.M)
    if not m:
        raise SystemExit(f"docker/{image}.Dockerfile: no `ARG PYTHON_IMAGE=python:X.Y...` line to read its Python from")
    return m.group(1)


def read_pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirements file's `name==version` lines."""
    pins = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[canonicalize_name(name)] = version.strip()
    return pins


def resolve(extras: list[str], constraints: Path | None) -> list[dict]:
    """pip's installation report for kuberollout[extras] (from the index, into nothing)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--dry-run",
               "--ignore-installed", "--quiet", "--report", str(report), f"{REPO}[{','.join(extras)}]"]
        if constraints is not None:
            cmd += ["--constraint", str(constraints)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip() or proc.stdout.strip())
        return json.loads(report.read_text())["install"]


def required_by(items: list[dict], extras: list[str]) -> dict[str, set[str]]:
    """{package: the packages (or `kuberollout[extras]`) that require it}, following the extras
    each package was asked for, from the root down."""
    meta = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in items}
    wanted: dict[str, set[str]] = defaultdict(set, {PROJECT: set(extras)})
    parents: dict[str, set[str]] = defaultdict(set)
    todo = [PROJECT]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name = todo.pop()
        key = (name, frozenset(wanted[name]))
        if key in seen or name not in meta:
            continue
        seen.add(key)
        for spec in meta[name].get("requires_dist") or []:
            req = Requirement(spec)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *wanted[name])):
                continue
            child = canonicalize_name(req.name)
            if child == PROJECT:  # a self-reference such as kuberollout[runtime] inside an extra
                if not req.extras <= wanted[PROJECT]:
                    wanted[PROJECT] |= req.extras
                    todo.append(PROJECT)
                continue
            parents[child].add(f"{PROJECT}[{','.join(extras)}]" if name == PROJECT else name)
            if not req.extras <= wanted[child]:
                wanted[child] |= req.extras
            todo.append(child)
    return parents


def render(image: str, extras: list[str], items: list[dict]) -> str:
    parents = required_by(items, extras)
    lines = [
        f"# docker/{image}.Dockerfile: every dependency of kuberollout[{','.join(extras)}], pinned; installed with --no-deps.",
        f"# Resolved for Python {sys.version_info.major}.{sys.version_info.minor} on {platform.system()} "
        f"{platform.machine()}. Regenerate: python scripts/lock_images.py [--upgrade] (see docs/dependencies.md).",
        "",
    ]
    pins = sorted((canonicalize_name(i["metadata"]["name"]), i["metadata"]["version"]) for i in items)
    for name, version in pins:
        if name == PROJECT:
            continue
        lines.append(f"{name}=={version}")
        via = sorted(parents.get(name, ())) or ["?"]
        lines.append(f"    # via {', '.join(via)}")
    return "\n".join(lines) + "\n"


def lock(image: str, extras: list[str], upgrade: bool) -> str:
    path = requirements_path(image)
    if upgrade or not path.exists():
        return render(image, extras, resolve(extras, None))
    # Keep the current pins where they still satisfy pyproject (as pip-compile does): feed them as
    # constraints; a conflict (a raised lower bound, say) falls back to a fresh resolution.
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as cons:
        cons.write("".join(f"{n}=={v}\n" for n, v in read_pins(path).items()))
        cons.flush()
        try:
            return render(image, extras, resolve(extras, Path(cons.name)))
        except RuntimeError:
            print(f"{image}: the current pins conflict with pyproject.toml; resolving afresh", file=sys.stderr)
            return render(image, extras, resolve(extras, None))


def main(argv: list[str] | None = None) -> int:
    known = images()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="*", metavar="IMAGE", help=f"one or more of {', '.join(known)} (default: all)")
    p.add_argument("--upgrade", action="store_true", help="ignore the current pins: newest allowed versions")
    args = p.parse_args(argv)
    if unknown := [i for i in args.images if i not in known]:
        p.error(f"unknown image {', '.join(unknown)}: pyproject.toml's [tool.kuberollout.images] has {', '.join(known)}")
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    for image in args.images or known:
        if image_python(image) != running or platform.system() != "Linux":
            print(f"{image}: resolve with Python {image_python(image)} on Linux (the image's), not Python {running} "
                  f"on {platform.system()}: markers and wheels differ", file=sys.stderr)
            return 2
        try:
            text = lock(image, known[image], args.upgrade)
        except RuntimeError as exc:
            print(f"{image}: pip could not resolve kuberollout[{','.join(known[image])}]:\n{exc}", file=sys.stderr)
            return 1
        requirements_path(image).write_text(text)
        print(f"{requirements_path(image).relative_to(REPO)}: {text.count('==')} pins")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
