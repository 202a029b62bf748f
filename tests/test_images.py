"""The images cannot be built here (no container engine): check what they run exists and runs.

The fast tests read the Dockerfiles and the pinned requirement files. The slow ones build each
image's Python environment as its Dockerfile does (a new virtual environment, the image's pinned
requirements with --no-deps, the project's copied sources with --no-deps) and run the image's
entry points in it, so a dependency missing from an image's pins, or one it must not carry, fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO, TINY_MODEL

DOCKERFILES = {"runtime": REPO / "docker" / "runtime.Dockerfile", "operator": REPO / "docker" / "operator.Dockerfile"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
IMAGES: dict[str, list[str]] = PYPROJECT["tool"]["kuberollout"]["images"]
# The operator only reconciles: none of the runtime's data, model and reward stack.
OPERATOR_FORBIDDEN = ("transformers", "tokenizers", "sympy", "math-verify", "torch", "pyarrow", "numpy")
RUNTIME_FORBIDDEN = ("kopf", "torch")


def entrypoint(path) -> list[str]:
    m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", path.read_text(), re.M)
    assert m, f"{path.name} has no exec-form ENTRYPOINT"
    return json.loads(m.group(1))


def pinned(image: str) -> dict[str, str]:
    """{canonical name: version} of docker/requirements-<image>.txt."""
    pins = {}
    for line in (REPO / "docker" / f"requirements-{image}.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert "==" in line, f"requirements-{image}.txt: {line!r} is not pinned with =="
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version
    return pins


def declared(extras: list[str]) -> list[Requirement]:
    """kuberollout's base dependencies plus those of `extras`, self-references expanded."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    reqs, todo, seen = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in optional[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == "kuberollout":
                todo.extend(req.extras)
            else:
                reqs.append(req)
    return reqs


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_entrypoint_exists_and_runs(kind):
    cmd = entrypoint(DOCKERFILES[kind])
    exe = shutil.which(cmd[0])
    assert exe, f"{cmd[0]} is not an installed console script"
    res = subprocess.run([exe, *cmd[1:], "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage" in (res.stdout + res.stderr).lower()


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_final_stage_is_slim_and_non_root(kind):
    text = DOCKERFILES[kind].read_text()
    final = text.split("\nFROM ")[-1]
    assert re.search(r"^USER\s+10001", final, re.M), "the final stage must run as a non-root user"
    assert "apt-get" not in final and "pip install" not in final, "no build steps in the final stage"
    assert "requirements.txt" in text, "install pinned dependencies"


@pytest.mark.parametrize("kind", DOCKERFILES)
def test_each_image_installs_its_own_pins_without_resolving(kind):
    text = DOCKERFILES[kind].read_text()
    copied = re.search(r"^COPY\s+docker/(requirements-\S+\.txt)\s+(\S+)\s*$", text, re.M)
    assert copied and copied.group(1) == f"requirements-{kind}.txt", f"{kind} must install requirements-{kind}.txt"
    assert re.search(rf"^RUN pip install --no-deps -r {re.escape(copied.group(2))}\s*$", text, re.M), \
        "the pins are the whole environment: install them with --no-deps"
    assert re.search(r"^RUN pip install --no-deps /src\s*$", text, re.M), "the project adds no unpinned dependency"
    assert set(IMAGES) == set(DOCKERFILES), "pyproject's [tool.kuberollout.images] names the images"


def test_pinned_requirements_cover_the_runtime_dependencies():
    runtime, operator = pinned("runtime"), pinned("operator")
    for dep in ("aiohttp", "pydantic", "kubernetes", "transformers", "pyarrow", "math-verify", "sglang-router"):
        assert dep in runtime, f"{dep} is not pinned in docker/requirements-runtime.txt"
    assert "torch" not in runtime, "the runtime image does not need torch"
    for dep in ("aiohttp", "pydantic", "kopf", "prometheus-client"):
        assert dep in operator, f"{dep} is not pinned in docker/requirements-operator.txt"


@pytest.mark.parametrize("image", IMAGES)
def test_pins_satisfy_every_declared_dependency(image):
    """A dependency added to pyproject.toml without re-running scripts/lock_images.py fails here."""
    pins = pinned(image)
    for req in declared(IMAGES[image]):
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is declared for the {image} image but not pinned: run scripts/lock_images.py"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{name}=={pins[name]} does not satisfy {req}: run scripts/lock_images.py"


@pytest.mark.parametrize(("image", "forbidden"), [("operator", OPERATOR_FORBIDDEN), ("runtime", RUNTIME_FORBIDDEN)])
def test_pins_leave_out_what_the_image_must_not_carry(image, forbidden):
    pins = pinned(image)
    assert not [p for p in forbidden if p in pins], f"the {image} image must not carry {forbidden}"


def test_runtime_image_runs_the_sim_engine_and_router_entrypoints():
    res = subprocess.run(["rollout-runtime", "sim-engine", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--token-latency" in res.stdout
    res = subprocess.run(["python3", "-m", "sglang_router.launch_router", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "--service-discovery" in res.stdout


# -- each image's environment, built as its Dockerfile builds it ---------------------------------

class ImageEnv:
    """A virtual environment holding exactly what one image's build stage installs."""

    def __init__(self, image: str, root: Path) -> None:
        self.image = image
        self.root = root
        self.venv = root / "venv"
        self.bin = self.venv / "bin"
        self.work = root / "work"  # cwd of every command: the repository is not on sys.path

    def env(self, **extra: str) -> dict[str, str]:
        # No PYTHONPATH (a developer's would put the repository's sources first) nor PYTHON*.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
        return {**env, "PATH": f"{self.bin}{os.pathsep}{env.get('PATH', '')}", "VIRTUAL_ENV": str(self.venv), **extra}

    def run(self, *cmd: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=self.work, env=self.env(), capture_output=True, text=True, timeout=timeout, **kw)

    def build(self) -> None:
        self.work.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, timeout=120)
        dockerfile = DOCKERFILES[self.image].read_text()
        requirements = re.search(r"^COPY\s+(docker/requirements-\S+\.txt)\s", dockerfile, re.M).group(1)
        self.pip_install("--no-deps", "-r", str(REPO / requirements))
        self.pip_install("--no-deps", str(self.copy_sources(dockerfile)))

    def copy_sources(self, dockerfile: str) -> Path:
        """The Dockerfile's `COPY ... /src/...` lines, carried out: what `pip install /src` sees."""
        src = self.root / "src"
        for m in re.finditer(r"^COPY\s+(?!--)(.+)\s+(/src/\S*)\s*$", dockerfile, re.M):
            dest = src / m.group(2).removeprefix("/src/")
            for item in m.group(1).split():
                origin = REPO / item
                if origin.is_dir():  # as Docker does: the directory's contents, into dest
                    shutil.copytree(origin, dest, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, dest / origin.name)
        assert (src / "pyproject.toml").exists(), "the Dockerfile copies no pyproject.toml to /src/"
        return src

    def pip_install(self, *args: str) -> None:
        """Through the wheel cache scripts/test.sh fills, so a second run downloads nothing."""
        proc = subprocess.run(["bash", str(REPO / "scripts" / "cached-pip-install.sh"), *args], cwd=REPO,
                              env=self.env(PYTHON=str(self.bin / "python")), capture_output=True, text=True,
                              timeout=1200)
        assert proc.returncode == 0, f"pip install {' '.join(args)} failed:\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def operator_env(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    env = ImageEnv("operator", tmp_path_factory.mktemp("operator-image"))
    env.build()
    return env


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    env = ImageEnv("runtime", tmp_path_factory.mktemp("runtime-image"))
    env.build()
    return env


IMPORT_ALL = """
import importlib, json, pkgutil, sys
import {package}
failed = {{}}
for mod in pkgutil.walk_packages({package}.__path__, "{package}."):
    try:
        importlib.import_module(mod.name)
    except Exception as exc:
        failed[mod.name] = repr(exc)
print(json.dumps({{"file": {package}.__file__, "failed": failed, "modules": sorted({{m.split(".")[0] for m in sys.modules}})}}))
"""


def import_everything(env: ImageEnv, package: str) -> dict:
    proc = env.run(str(env.bin / "python"), "-c", IMPORT_ALL.format(package=package))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["file"].startswith(str(env.venv)), f"{package} came from {report['file']}, not the image's install"
    assert not report["failed"], f"modules of {package} that do not import in the {env.image} image: {report['failed']}"
    return report


def installed(env: ImageEnv) -> set[str]:
    proc = env.run(str(env.bin / "python"), "-c",
                   "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))")
    assert proc.returncode == 0, proc.stderr
    return {canonicalize_name(n) for n in proc.stdout.split()}


@pytest.mark.slow
def test_operator_image_runs_its_entry_points_without_the_runtime_stack(operator_env):
    env = operator_env
    check = env.run(str(env.bin / "python"), "-m", "pip", "check")
    assert check.returncode == 0, f"the operator's pins are inconsistent:\n{check.stdout}"
    present = installed(env)
    assert "kuberollout" in present and "kopf" in present
    assert not [p for p in OPERATOR_FORBIDDEN if p in present], "the operator image carries the runtime's stack"

    help_ = env.run(str(env.bin / entrypoint(DOCKERFILES["operator"])[0]), "--help")
    assert help_.returncode == 0 and "--runtime-image" in help_.stdout, help_.stderr
    # What `rollout-operator` imports before kopf runs: the handlers, hence the whole controller,
    # and the runtime's config and contract modules that it shares.
    handlers = env.run(str(env.bin / "python"), "-c", "import rollout_operator.handlers, rollout_runtime.contract")
    assert handlers.returncode == 0, handlers.stderr
    report = import_everything(env, "rollout_operator")
    assert not [m for m in ("transformers", "sympy", "math_verify", "torch", "pyarrow") if m in report["modules"]]


@pytest.mark.slow
def test_runtime_image_runs_a_rollout_through_the_router(runtime_env, tmp_path):
    env = runtime_env
    check = env.run(str(env.bin / "python"), "-m", "pip", "check")
    assert check.returncode == 0, f"the runtime's pins are inconsistent:\n{check.stdout}"
    present = installed(env)
    assert "kuberollout" in present and "sglang-router" in present
    assert not [p for p in RUNTIME_FORBIDDEN if p in present], f"the runtime image must not carry {RUNTIME_FORBIDDEN}"

    rollout_runtime = str(env.bin / entrypoint(DOCKERFILES["runtime"])[0])
    for argv, expect in ((["--help"], "sim-engine"), (["run", "--help"], "--prompt-data"),
                         (["sim-engine", "--help"], "--token-latency")):
        res = env.run(rollout_runtime, *argv)
        assert res.returncode == 0 and expect in res.stdout, res.stderr
    res = env.run(str(env.bin / "python"), "-m", "sglang_router.launch_router", "--help")
    assert res.returncode == 0 and "--service-discovery" in res.stdout, res.stderr
    import_everything(env, "rollout_runtime")

    # The pod's work, in the image's environment: a simulated engine behind the real router, and
    # `rollout-runtime run` with a math reward and Parquet output (tokenizer, rewards, Arrow).
    from tests.engines.helpers import free_port, wait_http

    engine_port, router_port, metrics_port = free_port(), free_port(), free_port()
    procs = [subprocess.Popen([rollout_runtime, "sim-engine", "--host", "127.0.0.1", "--port", str(engine_port),
                               "--tokenizer", str(TINY_MODEL), "--token-latency", "0.001", "--length-median", "8"],
                              cwd=env.work, env=env.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_http(f"http://127.0.0.1:{engine_port}/health_generate", timeout=60)
        procs.append(subprocess.Popen(
            [str(env.bin / "python"), "-m", "sglang_router.launch_router", "--worker-urls",
             f"http://127.0.0.1:{engine_port}", "--host", "127.0.0.1", "--port", str(router_port),
             "--policy", "round_robin", "--prometheus-host", "127.0.0.1", "--prometheus-port", str(metrics_port)],
            cwd=env.work, env=env.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(f"http://127.0.0.1:{router_port}/readiness", timeout=60)
        out = tmp_path / "out"
        run = env.run(rollout_runtime, "run", "--no-progress", "--prompt-data",
                      str(REPO / "examples" / "data" / "arith_train.jsonl"), "--input-key", "prompt",
                      "--label-key", "label", "--hf-checkpoint", str(TINY_MODEL), "--apply-chat-template",
                      "--sglang-router-url", f"http://127.0.0.1:{router_port}", "--rollout-batch-size", "2",
                      "--n-samples-per-prompt", "2", "--rollout-max-response-len", "16", "--num-rollout", "1",
                      "--rm-type", "math", "--output-format", "parquet", "--output-dir", str(out), timeout=180)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "rollout summary" in run.stdout
        names = [p.name for p in out.glob("rollout_*.parquet")]  # rollout 0 by this (first local) attempt's writer
        assert len(names) == 1 and re.fullmatch(r"rollout_000000\.a1-[0-9a-f]{6}\.parquet", names[0]), names
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
@pytest.mark.cluster
def test_operator_image_reconciles_a_pool_on_the_control_plane(operator_env, cluster, tmp_path):
    """`rollout-operator` from the operator image's environment alone, against a real API server:
    it starts, and an SGLangPool gets its children (what a reconcile imports at run time, too)."""
    from tests.operator.kube_helpers import free_port, try_get, wait

    env = operator_env
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/sglangpools.kuberollout.io", "--timeout=60s")
    ns = cluster.new_namespace("operator-image")
    liveness, metrics = free_port(), free_port()
    log = tmp_path / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(env.bin / entrypoint(DOCKERFILES["operator"])[0]), "--namespace", ns, "--log-format", "plain",
             "--liveness", f"http://127.0.0.1:{liveness}/healthz", "--metrics-port", str(metrics)],
            cwd=env.work, env=env.env(KUBECONFIG=str(cluster.kubeconfig)), stdout=out, stderr=subprocess.STDOUT)
    try:
        def alive() -> bool:
            assert proc.poll() is None, f"the operator exited:\n{log.read_text()[-3000:]}"
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2).status == 200
            except OSError:
                return False

        wait("the operator's liveness endpoint", alive, timeout=60)
        cluster.kubectl("apply", "-n", ns, "-f", str(REPO / "examples" / "k8s" / "gpu-free" / "sglangpool.yaml"))
        server = wait("the pool's server Deployment", lambda: alive() and try_get(
            cluster, "deployment", "sim-pool-server", "-n", ns), timeout=60)
        assert server["spec"]["replicas"] == 2
        wait("the pool's status", lambda: alive() and (try_get(cluster, "sgp", "sim-pool", "-n", ns) or {})
             .get("status", {}).get("conditions"), timeout=60)
        text = log.read_text()
        assert "ModuleNotFoundError" not in text and "ImportError" not in text, text[-3000:]
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        cluster.delete_namespace(ns)
