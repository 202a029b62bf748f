"""Start a real Kubernetes control plane on loopback ports, or attach to an existing cluster.

Operator tests need real API semantics that fakes get wrong: CRD validation (structural schemas,
CEL rules), status subresources, optimistic concurrency, RBAC, garbage collection, the scheduler's
extended-resource accounting. So the harness runs the real binaries, built by ``build.sh`` from
their Go modules:

- etcd, kube-apiserver (RBAC, ServiceAccount admission on, TLS with a throwaway CA);
- kube-controller-manager (all default controllers, per-controller ServiceAccount credentials);
- kube-scheduler;
- kwok, which plays kubelet for nodes annotated ``kwok.x-k8s.io/node=fake``; the harness creates
  fake GPU nodes (``nvidia.com/gpu`` in capacity) and kwok marks their pods Running and Ready.

Everything lives in one temporary directory (certificates, etcd data, kubeconfigs, logs) that
is removed on stop. ``USE_EXISTING_CLUSTER=1`` with ``KUBECONFIG`` attaches to a real cluster
instead and starts nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime as dt
import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BUILD_SCRIPT = Path(__file__).resolve().with_name("build.sh")
# kwok v0.8 has no built-in lifecycle: these Stages make fake nodes Ready and pods Running.
KWOK_STAGES = Path(__file__).resolve().with_name("kwok-stages.yaml")

SERVER_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
CLIENT_BINARIES = ("kubectl", "helm")
ALL_BINARIES = SERVER_BINARIES + CLIENT_BINARIES
# Without these there is no plane at all; the rest only disable features (tests then skip).
ESSENTIAL_BINARIES = ("etcd", "kube-apiserver", "kubectl")

GPU_RESOURCE = "nvidia.com/gpu"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
# Fake nodes carry this taint so that only pods that opt in land on them (pods there never run).
GPU_TOLERATION: dict[str, str] = {
    "key": FAKE_NODE_ANNOTATION,
    "operator": "Equal",
    "value": "fake",
    "effect": "NoSchedule",
}

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"  # kwok hands out fake pod IPs from here; they do not route.
START_TIMEOUT_S = 90.0


class ClusterUnavailable(Exception):
    """No control plane can be had here (binaries missing and not buildable, or opted out).

    The fixture turns this into a skip: a machine without the binaries is not a test failure.
    """


class ControlPlaneError(RuntimeError):
    """The binaries exist but the plane did not come up or misbehaved: a real error, not a skip."""


class CommandFailed(subprocess.CalledProcessError):
    """A kubectl/helm call failed; unlike CalledProcessError, its message shows the output."""

    def __str__(self) -> str:
        return (
            f"{' '.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def env_flag(name: str) -> bool:
    """True when an environment switch is set to a truthy value ("1", "true", "yes")."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------------------------


def pinned_versions() -> dict[str, str]:
    """The versions build.sh builds, read from the same files it reads (go.mod, build.sh).

    Tests compare /version and `helm version` against these, so a version bump needs no test
    edit and a binary that reports the wrong version is caught.
    """
    go_dir = BUILD_SCRIPT.parent / "go"

    def mod_version(gomod: Path, module: str) -> str:
        found = ""
        for line in gomod.read_text().splitlines():
            f = line.replace("replace ", "").replace("require ", "").split()
            if len(f) >= 4 and f[0] == module and f[1] == "=>" and f[2] == module:
                return f[3]
            if len(f) >= 2 and f[0] == module and f[1].startswith("v") and not found:
                found = f[1]
        return found

    script = BUILD_SCRIPT.read_text()

    def script_var(name: str) -> str:
        for line in script.splitlines():
            if line.startswith(f"{name}="):
                return line.split("=", 1)[1].strip().strip('"')
        return ""

    return {
        "kubernetes": mod_version(go_dir / "go.mod", "k8s.io/kubernetes"),
        "etcd": mod_version(go_dir / "etcd" / "go.mod", "go.etcd.io/etcd/server/v3"),
        "kwok": script_var("KWOK_VERSION"),
        "helm": script_var("HELM_VERSION"),
    }


def cache_bin_dir() -> Path | None:
    """The versioned cache directory build.sh fills (asking build.sh keeps one source of truth)."""
    try:
        out = subprocess.run(
            ["bash", str(BUILD_SCRIPT), "--print-bin-dir"],
            capture_output=True, text=True, check=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip().splitlines()[-1])


def locate_binaries(user_dir: Path | None, cache_dir: Path | None) -> dict[str, Path | None]:
    """Find each binary: the user's dir first, then the cache, then PATH for the client tools.

    A user's dir (say, from setup-envtest) often has only etcd, kube-apiserver and kubectl; the
    cache or PATH may supply the rest.
    """
    found: dict[str, Path | None] = {}
    for name in ALL_BINARIES:
        found[name] = None
        for d in (user_dir, cache_dir):
            if d is not None and os.access(d / name, os.X_OK):
                found[name] = d / name
                break
        if found[name] is None and name in CLIENT_BINARIES and shutil.which(name):
            found[name] = Path(shutil.which(name))  # type: ignore[arg-type]
    return found


def run_build_script() -> Path:
    """Build the missing binaries (about 10 min cold on 2 cores); returns the bin dir.

    The build's progress goes to a log file whose path is printed first: pytest captures the
    fixture's output, and ten silent minutes look like a hang.
    """
    log = Path(tempfile.gettempdir()) / f"kuberollout-build-{os.getpid()}.log"
    print(f"\n[kuberollout cluster] control-plane binaries missing: running {BUILD_SCRIPT} "
          f"(about 10 min the first time; progress in {log})", flush=True)
    with open(log, "w") as err:
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, stderr=err,
                              text=True, check=False)
    tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
    if proc.returncode != 0:
        raise ClusterUnavailable(
            f"control-plane binaries are missing and {BUILD_SCRIPT.name} failed "
            f"(exit {proc.returncode}, log {log}):\n{tail}"
        )
    log.unlink(missing_ok=True)
    return Path(proc.stdout.strip().splitlines()[-1])


def ensure_binaries() -> dict[str, Path | None]:
    """Binaries for the plane, building them when the cache is incomplete.

    With KUBEROLLOUT_K8S_BIN set nothing is built: the user chose their binaries, and what is
    missing only disables the features that need it.
    """
    if env_flag("KUBEROLLOUT_SKIP_CLUSTER"):
        raise ClusterUnavailable("KUBEROLLOUT_SKIP_CLUSTER is set")
    user = os.environ.get("KUBEROLLOUT_K8S_BIN")
    user_dir = Path(user).expanduser() if user else None
    cache_dir = cache_bin_dir()
    found = locate_binaries(user_dir, cache_dir)
    if user_dir is None and any((p := found[n]) is None or p.parent != cache_dir
                                for n in ALL_BINARIES):
        found = locate_binaries(None, run_build_script())
    missing = [n for n in ESSENTIAL_BINARIES if found[n] is None]
    if missing:
        where = f"KUBEROLLOUT_K8S_BIN={user_dir}" if user_dir else f"the cache {cache_dir}"
        raise ClusterUnavailable(f"missing {', '.join(missing)} in {where}")
    return found


# --------------------------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PKI:
    """The plane's throwaway certificates: a CA for serving, one for client certs, one for the
    front proxy (request-header authentication, as kubeadm sets up), and the SA signing keys."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    client_ca_cert: Path
    client_ca_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path
    front_proxy_ca_cert: Path
    front_proxy_client_cert: Path
    front_proxy_client_key: Path

    @classmethod
    def generate(cls, directory: Path) -> PKI:
        """Write fresh certificates into ``directory`` (EC keys: generating them is instant)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        directory.mkdir(parents=True, exist_ok=True)
        files = {
            "ca_cert": "ca.crt", "serving_cert": "apiserver.crt", "serving_key": "apiserver.key",
            "client_ca_cert": "client-ca.crt", "client_ca_key": "client-ca.key",
            "admin_cert": "admin.crt", "admin_key": "admin.key",
            "sa_key": "sa.key", "sa_pub": "sa.pub",
            "front_proxy_ca_cert": "front-proxy-ca.crt",
            "front_proxy_client_cert": "front-proxy-client.crt",
            "front_proxy_client_key": "front-proxy-client.key",
        }
        p = {k: directory / f for k, f in files.items()}

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("kuberollout-test-ca", ca_key, ca_key.public_key(), None, is_ca=True)
        serving_key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [
            x509.DNSName(n) for n in ("localhost", "kubernetes", "kubernetes.default",
                                      "kubernetes.default.svc",
                                      "kubernetes.default.svc.cluster.local")
        ] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1", "10.96.0.1")]
        serving = _cert("kube-apiserver", serving_key, serving_key.public_key(), (ca, ca_key),
                        sans=sans, usage="server")

        client_ca_key = ec.generate_private_key(ec.SECP256R1())
        client_ca = _cert("kuberollout-test-client-ca", client_ca_key,
                          client_ca_key.public_key(), None, is_ca=True)
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = _cert("kuberollout-admin", admin_key, admin_key.public_key(),
                      (client_ca, client_ca_key), org="system:masters", usage="client")

        # Without a front-proxy CA, every delegating component (controller-manager, scheduler)
        # logs "missing content for CA bundle requestheader-client-ca-file" several times a second.
        fp_ca_key = ec.generate_private_key(ec.SECP256R1())
        fp_ca = _cert("kuberollout-test-front-proxy-ca", fp_ca_key, fp_ca_key.public_key(), None,
                      is_ca=True)
        fp_key = ec.generate_private_key(ec.SECP256R1())
        fp_client = _cert("front-proxy-client", fp_key, fp_key.public_key(), (fp_ca, fp_ca_key),
                          usage="client")

        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        def pem_key(k: Any) -> bytes:
            return k.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption())

        writes = {
            p["ca_cert"]: ca.public_bytes(serialization.Encoding.PEM),
            p["serving_cert"]: serving.public_bytes(serialization.Encoding.PEM),
            p["serving_key"]: pem_key(serving_key),
            p["client_ca_cert"]: client_ca.public_bytes(serialization.Encoding.PEM),
            p["client_ca_key"]: pem_key(client_ca_key),
            p["admin_cert"]: admin.public_bytes(serialization.Encoding.PEM),
            p["admin_key"]: pem_key(admin_key),
            p["sa_key"]: pem_key(sa_key),
            p["front_proxy_ca_cert"]: fp_ca.public_bytes(serialization.Encoding.PEM),
            p["front_proxy_client_cert"]: fp_client.public_bytes(serialization.Encoding.PEM),
            p["front_proxy_client_key"]: pem_key(fp_key),
            p["sa_pub"]: sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        for path, data in writes.items():
            path.write_bytes(data)
            path.chmod(0o600)
        return cls(**p)


def _cert(cn: str, key: Any, public_key: Any, issuer: tuple[Any, Any] | None, *,
          is_ca: bool = False, sans: Sequence[Any] = (), org: str | None = None,
          usage: str | None = None) -> Any:
    """One X.509 certificate, valid from an hour ago (clock skew) for a week."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    subject = x509.Name(attrs)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(subject)
         .issuer_name(issuer_cert.subject if issuer_cert else subject)
         .public_key(public_key)
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(hours=1))
         .not_valid_after(now + dt.timedelta(days=7))
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if is_ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=True, key_cert_sign=False, crl_sign=False,
            content_commitment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports, held open together so they cannot repeat."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """Child-side: get SIGTERM if pytest dies (even by SIGKILL), so nothing is left behind."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Component:
    """One control-plane process with its log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start detached from the terminal's process group, so Ctrl-C reaches only pytest,
        which then stops the plane in order (and removes its data)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                # preexec_fn only calls prctl, which is async-signal-safe.
                env=self.env, start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Fail fast with the log tail when the process has died."""
        if self.proc is not None and self.proc.poll() is not None:
            raise ControlPlaneError(
                f"{self.name} exited with code {self.proc.returncode}; last log lines:\n"
                f"{self.tail(40)}"
            )

    def terminate(self) -> None:
        if self.running:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for a terminated process until ``deadline``, then SIGKILL it."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=10)

    def tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200 * lines))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(data.splitlines()[-lines:])


def stop_components(components: Sequence[Component], grace_s: float = 10.0) -> None:
    """SIGTERM a group of components together, then SIGKILL whatever outlives the grace."""
    for c in components:
        c.terminate()
    deadline = time.monotonic() + grace_s
    for c in components:
        c.wait_or_kill(deadline)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float,
             watch: Iterable[Component] = (), interval: float = 0.1) -> None:
    """Poll ``predicate`` until true; fail early if a watched process dies."""
    watch = list(watch)
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        for c in watch:
            c.check_alive()
        try:
            if predicate():
                return
        except Exception as exc:  # noqa: BLE001 - transient until the deadline
            last_exc = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            tails = "\n".join(f"--- {c.name} ---\n{c.tail(20)}" for c in watch)
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}"
                                    f"{detail}\n{tails}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Kubeconfig helpers
# --------------------------------------------------------------------------------------------


def write_kubeconfig(path: Path, server: str, ca_file: Path | None, user: dict[str, Any],
                     namespace: str | None = None, name: str = "kuberollout-test") -> Path:
    """Write a one-context kubeconfig; used for the admin and for per-ServiceAccount configs."""
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    else:
        cluster["insecure-skip-tls-verify"] = True
    context: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": context}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path


def _current_cluster(kubeconfig: Path) -> dict[str, Any]:
    """The cluster entry (server, CA) of a kubeconfig's current context."""
    doc = yaml.safe_load(kubeconfig.read_text()) or {}
    ctx_name = doc.get("current-context")
    ctx = next((c["context"] for c in doc.get("contexts", []) if c["name"] == ctx_name), None)
    if ctx is None:
        raise ControlPlaneError(f"{kubeconfig} has no current context")
    return next(c["cluster"] for c in doc.get("clusters", []) if c["name"] == ctx["cluster"])


def gpu_node_manifest(name: str, gpus: int) -> dict[str, Any]:
    """A kwok-managed fake node advertising ``gpus`` nvidia.com/gpu.

    kwok keeps whatever capacity we write, so fake GPUs are just an extended resource; the
    scheduler accounts for them exactly as on a real GPU node.
    """
    resources = {"cpu": "64", "memory": "512Gi", "pods": "110",
                 "ephemeral-storage": "1Ti", GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            },
        },
        "spec": {"taints": [{"key": FAKE_NODE_ANNOTATION, "value": "fake",
                             "effect": "NoSchedule"}]},
        "status": {"capacity": resources, "allocatable": resources},
    }


# --------------------------------------------------------------------------------------------
# The plane
# --------------------------------------------------------------------------------------------


WORKDIR_PREFIX = "kuberollout-plane-"


def remove_stale_workdirs() -> None:
    """Remove plane directories whose pytest died without cleaning up (SIGKILL, a crash).

    Each directory records its owner's pid; its processes died with the owner (they get
    PR_SET_PDEATHSIG), so only the files are left.
    """
    for d in Path(tempfile.gettempdir()).glob(WORKDIR_PREFIX + "*"):
        try:
            pid = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


class ControlPlane:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok in one temp directory."""

    def __init__(self, bins: Mapping[str, Path | None], gpu_nodes: int = 2,
                 gpus_per_node: int = 8) -> None:
        self.bins = dict(bins)
        self.gpu_node_count = gpu_nodes if bins.get("kwok") else 0
        self.gpus_per_node = gpus_per_node
        remove_stale_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / "owner.pid").write_text(str(os.getpid()))
        self.components: list[Component] = []
        self.pki: PKI | None = None
        self.server = ""
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self._ssl: ssl.SSLContext | None = None
        self._stopped = False
        atexit.register(self.stop)  # Ctrl-C paths that skip fixture teardown still clean up

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start every component and wait until the plane can run workloads."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.pki = PKI.generate(self.workdir / "pki")
        (self.workdir / "logs").mkdir()
        etcd_port, peer_port, api_port, kcm_port, sched_port = free_ports(5)
        self.server = f"https://127.0.0.1:{api_port}"
        self._start_storage_and_apiserver(etcd_port, peer_port, api_port)
        health = self._start_controllers(kcm_port, sched_port)
        for i in range(self.gpu_node_count):
            self._api_post("/api/v1/nodes", gpu_node_manifest(f"kwok-gpu-{i}", self.gpus_per_node))
        self._wait_until_usable(health)

    def _start_storage_and_apiserver(self, etcd_port: int, peer_port: int, api_port: int) -> None:
        assert self.pki is not None
        etcd = self._component("etcd", self._etcd_args(etcd_port, peer_port))
        wait_for("etcd health", lambda: _http_ok(f"http://127.0.0.1:{etcd_port}/health"),
                 30, [etcd])
        api = self._component("kube-apiserver", self._apiserver_args(api_port, etcd_port))
        write_kubeconfig(self.kubeconfig, self.server, self.pki.ca_cert, {
            "client-certificate": str(self.pki.admin_cert),
            "client-key": str(self.pki.admin_key),
        })
        wait_for("kube-apiserver /readyz", lambda: self._api_get("/readyz")[0] == 200,
                 START_TIMEOUT_S, [etcd, api])

    def _start_controllers(self, kcm_port: int, sched_port: int) -> list[tuple[str, int]]:
        """Start whichever of controller-manager, scheduler and kwok exist, all at once (they
        need only the apiserver); returns the (name, port) pairs that serve /healthz."""
        health: list[tuple[str, int]] = []
        if self.bins.get("kube-controller-manager"):
            self._component("kube-controller-manager", self._kcm_args(kcm_port))
            health.append(("kube-controller-manager", kcm_port))
        if self.bins.get("kube-scheduler"):
            self._component("kube-scheduler", self._scheduler_args(sched_port))
            health.append(("kube-scheduler", sched_port))
        if self.bins.get("kwok"):
            # KWOK_WORKDIR keeps a developer's ~/.kwok/kwok.yaml out of the plane.
            self._component("kwok", self._kwok_args(),
                            env=dict(os.environ, KWOK_WORKDIR=str(self.workdir / "kwok")))
        return health

    def _wait_until_usable(self, health: Sequence[tuple[str, int]]) -> None:
        """Ready means a test can create pods and have them scheduled: components healthy,
        the default ServiceAccount present (admission needs it), fake nodes Ready."""
        for name, port in health:
            url = f"https://127.0.0.1:{port}/healthz"
            wait_for(f"{name} /healthz", functools.partial(_http_ok, url, self._ssl_context()),
                     START_TIMEOUT_S, self.components)
        if self.bins.get("kube-controller-manager"):
            wait_for("the default ServiceAccount in namespace default",
                     lambda: self._api_get(
                         "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                     START_TIMEOUT_S, self.components)
        for i in range(self.gpu_node_count):
            wait_for(f"node kwok-gpu-{i} Ready",
                     functools.partial(self._node_ready, f"kwok-gpu-{i}"),
                     START_TIMEOUT_S, self.components)

    def _node_ready(self, name: str) -> bool:
        return _node_ready(self._api_get(f"/api/v1/nodes/{name}"))

    def stop(self) -> None:
        """Stop clients before servers (so nothing logs a storm of connection errors), then
        remove the data. Idempotent; also runs at interpreter exit."""
        if self._stopped:
            return
        self._stopped = True
        by_name = {c.name: c for c in self.components}
        order = [("process-kubelet", "kwok", "kube-scheduler", "kube-controller-manager"),
                 ("kube-apiserver",), ("etcd",)]
        for group in order:
            stop_components([by_name[n] for n in group if n in by_name])
        if env_flag("KUBEROLLOUT_KEEP_CLUSTER_DIR"):
            # Without the owner file the next session will not take it for a stale directory.
            (self.workdir / "owner.pid").unlink(missing_ok=True)
            print(f"[kuberollout cluster] kept {self.workdir}", flush=True)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- component command lines ------------------------------------------------------------

    def _component(self, name: str, args: Sequence[str],
                   env: Mapping[str, str] | None = None) -> Component:
        binary = self.bins[name]
        assert binary is not None
        comp = Component(name, [str(binary), *args],
                         self.workdir / "logs" / f"{name}.log", env)
        self.components.append(comp)
        comp.start()
        return comp

    def _etcd_args(self, port: int, peer_port: int) -> list[str]:
        url, peer = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer_port}"
        return [
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            "--name=kuberollout-test", f"--initial-cluster=kuberollout-test={peer}",
            "--unsafe-no-fsync=true",  # test data: durability is worthless, fsync is slow
            "--log-level=warn",
        ]

    def _apiserver_args(self, port: int, etcd_port: int) -> list[str]:
        pki = self.pki
        assert pki is not None
        args = [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            f"--secure-port={port}", "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The `kubernetes` Service cannot have a loopback endpoint (validation rejects it
            # every 10 s); nothing in this plane could use it anyway.
            "--endpoint-reconciler-type=none",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.client_ca_cert}",
            f"--requestheader-client-ca-file={pki.front_proxy_ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.front_proxy_client_cert}",
            f"--proxy-client-key-file={pki.front_proxy_client_key}",
            f"--service-account-issuer=https://127.0.0.1:{port}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            # Two cores: no API priority-and-fairness bookkeeping and no inflight limits, the
            # test suite is the only client (same as kwokctl's binary runtime).
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=0", "--max-mutating-requests-inflight=0",
            "--profiling=false",
            "--event-ttl=1h",
        ]
        if not self.bins.get("kube-controller-manager"):
            # Nobody would create ServiceAccounts, so pods would be rejected (envtest's setting).
            args.append("--disable-admission-plugins=ServiceAccount")
        return args

    def _secure_serving_args(self, port: int) -> list[str]:
        """Serve /healthz on a free port with our cert (defaults would clash across sessions)."""
        pki = self.pki
        assert pki is not None
        return [
            f"--secure-port={port}", "--bind-address=127.0.0.1",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
        ]

    def _kcm_args(self, port: int) -> list[str]:
        pki = self.pki
        assert pki is not None
        return self._secure_serving_args(port) + [
            "--controllers=*",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            # Lets CSR-based tests get certificates signed by the client CA.
            f"--cluster-signing-cert-file={pki.client_ca_cert}",
            f"--cluster-signing-key-file={pki.client_ca_key}",
            # Defaults (20 qps) make garbage collection of many objects crawl.
            "--kube-api-qps=200", "--kube-api-burst=400",
            "--profiling=false",
        ]

    def _scheduler_args(self, port: int) -> list[str]:
        return self._secure_serving_args(port) + ["--profiling=false"]

    def _kwok_args(self) -> list[str]:
        return [
            f"--config={KWOK_STAGES}",
            f"--kubeconfig={self.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=10.255.0.1",
        ]

    # -- tiny HTTPS client (no dependency on the kubernetes package during start) -----------

    def _ssl_context(self) -> ssl.SSLContext:
        """Admin TLS context, built once (loading certificates on every poll is waste)."""
        if self._ssl is None:
            pki = self.pki
            assert pki is not None
            self._ssl = ssl.create_default_context(cafile=str(pki.ca_cert))
            self._ssl.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return self._ssl

    def _api_get(self, path: str) -> tuple[int, Any]:
        return _request(self.server + path, self._ssl_context())

    def _api_post(self, path: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        status, data = _request(self.server + path, self._ssl_context(), method="POST",
                                body=body)
        if status not in (200, 201):
            raise ControlPlaneError(f"POST {path} -> {status}: {data}")
        return status, data

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"----- {c.name} ({c.log_path}) -----\n{c.tail(lines)}"
                         for c in self.components)


def _request(url: str, context: ssl.SSLContext | None = None, method: str = "GET",
             body: Mapping[str, Any] | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    """One HTTP(S) request; returns (status, parsed JSON or text), HTTP errors included."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    # No proxy: an https_proxy in the environment must not capture loopback requests.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    return _request(url, context, timeout=2.0)[0] == 200


def _node_ready(resp: tuple[int, Any]) -> bool:
    status, node = resp
    if status != 200:
        return False
    conds = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


# --------------------------------------------------------------------------------------------
# What tests get
# --------------------------------------------------------------------------------------------


class Cluster:
    """The handle tests use: a started plane or an existing cluster, same interface.

    Commands always pass ``--kubeconfig`` explicitly, so a developer's own KUBECONFIG or
    ~/.kube/config is never touched by accident.
    """

    def __init__(self, kubeconfig: Path, bins: Mapping[str, Path | None],
                 plane: ControlPlane | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.bins = dict(bins)
        self.plane = plane
        self.existing = plane is None
        # Scratch files (SA kubeconfigs, helm's dirs) live in the plane's directory when there
        # is one, so a single removal cleans everything.
        if plane is not None:
            self.scratch = plane.workdir / "scratch"
            self.scratch.mkdir()
        else:
            remove_stale_workdirs()
            self.scratch = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
            (self.scratch / "owner.pid").write_text(str(os.getpid()))
        entry = _current_cluster(kubeconfig)
        self.server: str = entry["server"]
        self.ca_file: Path | None = self._ca_file(entry)
        self.gpu_toleration: dict[str, str] = dict(GPU_TOLERATION)
        self._namespaces: list[str] = []
        self._closed = False

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def start(cls) -> Cluster:
        """A fresh plane, or the existing cluster with USE_EXISTING_CLUSTER=1."""
        if env_flag("KUBEROLLOUT_SKIP_CLUSTER"):
            raise ClusterUnavailable("KUBEROLLOUT_SKIP_CLUSTER is set")
        if env_flag("USE_EXISTING_CLUSTER"):
            return cls.attach()
        bins = ensure_binaries()
        plane = ControlPlane(bins)
        plane.start()
        return cls(plane.kubeconfig, bins, plane)

    @classmethod
    def attach(cls) -> Cluster:
        """Use $KUBECONFIG's current context; nothing is started or built."""
        path = Path(os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0])
        path = path.expanduser()
        if not path.exists():
            raise ControlPlaneError(f"USE_EXISTING_CLUSTER=1 but kubeconfig {path} does not exist")
        user = os.environ.get("KUBEROLLOUT_K8S_BIN")
        bins = locate_binaries(Path(user).expanduser() if user else None, cache_bin_dir())
        cluster = cls(path, bins)
        try:
            cluster.core().get_api_resources()
        except Exception as exc:
            cluster.close()
            raise ControlPlaneError(f"cannot reach the existing cluster in {path}: {exc}") from exc
        return cluster

    def _ca_file(self, entry: Mapping[str, Any]) -> Path | None:
        if "certificate-authority" in entry:
            # Relative paths in a kubeconfig are relative to the kubeconfig file.
            return (self.kubeconfig.parent / Path(entry["certificate-authority"]).expanduser())
        if "certificate-authority-data" in entry:
            import base64
            path = self.scratch / "ca.crt"
            path.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
            return path
        return None

    def close(self) -> None:
        """Stop the plane; on an existing cluster, delete the namespaces the tests created."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.existing:
                for ns in self._namespaces:
                    self.kubectl("delete", "namespace", ns, "--wait=false",
                                 "--ignore-not-found", check=False)
        finally:
            if self.plane is not None:
                self.plane.stop()
            shutil.rmtree(self.scratch, ignore_errors=True)

    # -- capabilities -----------------------------------------------------------------------

    @property
    def bin_dir(self) -> Path | None:
        """Where kube-apiserver/kubectl came from (the versioned cache, normally)."""
        b = self.bins.get("kube-apiserver") or self.bins.get("kubectl")
        return b.parent if b else None

    def missing(self, *components: str) -> list[str]:
        """Which of the named components this cluster lacks (for skip reasons)."""
        if self.existing:
            # A real cluster has its own controllers/scheduler; only our client tools matter.
            return [c for c in components if c in CLIENT_BINARIES and not self.bins.get(c)]
        return [c for c in components if not self.bins.get(c)]

    def gpu_nodes(self) -> list[str]:
        """Ready nodes advertising nvidia.com/gpu (fake kwok ones, or real ones)."""
        nodes = self.core().list_node().items
        return sorted(
            n.metadata.name for n in nodes
            if int((n.status.allocatable or {}).get(GPU_RESOURCE, "0")) > 0
            and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        )

    def log_tails(self, lines: int = 30) -> str:
        """Last log lines of every component, for failure reports."""
        return self.plane.log_tails(lines) if self.plane else "(existing cluster: no logs)"

    # -- clients ----------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess that should talk to this cluster as admin."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), **extra}

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60, kubeconfig: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; ``check`` raises with stdout/stderr shown."""
        kubectl = self.bins.get("kubectl")
        if kubectl is None:
            raise ClusterUnavailable("kubectl is not available")
        cmd = [str(kubectl), f"--kubeconfig={kubeconfig or self.kubeconfig}", *map(str, args)]
        return self._run(cmd, check, input, timeout)

    def helm(self, *args: str, check: bool = True, input: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster, with its config/cache/data dirs kept in scratch."""
        helm = self.bins.get("helm")
        if helm is None:
            raise ClusterUnavailable("helm is not available")
        env = self.env(
            HELM_CACHE_HOME=str(self.scratch / "helm" / "cache"),
            HELM_CONFIG_HOME=str(self.scratch / "helm" / "config"),
            HELM_DATA_HOME=str(self.scratch / "helm" / "data"),
        )
        cmd = [str(helm), f"--kubeconfig={self.kubeconfig}", *map(str, args)]
        return self._run(cmd, check, input, timeout, env)

    @staticmethod
    def _run(cmd: list[str], check: bool, input: str | None, timeout: float,
             env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True,
                              timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise CommandFailed(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def api_client(self, kubeconfig: Path | None = None) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` for this cluster (admin unless told)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def core(self) -> Any:
        """CoreV1Api on an admin client (a shortcut used all over the tests)."""
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    # -- namespaces and identities ----------------------------------------------------------

    def new_namespace(self, prefix: str = "test", wait_for_default_sa: bool = True) -> str:
        """Create a uniquely named namespace; waits for its default ServiceAccount because
        pods created before it exists are rejected by the ServiceAccount admission plugin."""
        from kubernetes import client

        prefix = "".join(ch if ch.isalnum() else "-" for ch in prefix.lower())[:40].strip("-")
        name = f"{prefix or 'test'}-{secrets.token_hex(3)}"
        core = self.core()
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        self._namespaces.append(name)
        if wait_for_default_sa and not self.missing("kube-controller-manager"):
            wait_for(f"default ServiceAccount in {name}",
                     lambda: bool(core.list_namespaced_service_account(
                         name, field_selector="metadata.name=default").items),
                     30)
        return name

    def delete_namespace(self, name: str) -> None:
        """Delete without waiting: namespace finalization is slow and nobody needs to see it."""
        self.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found",
                     check=False)
        with contextlib.suppress(ValueError):
            self._namespaces.remove(name)

    def token_for(self, namespace: str, service_account: str,
                  expiration_seconds: int = 3600, audiences: Sequence[str] | None = None) -> str:
        """A bound token for a ServiceAccount via the TokenRequest API (as the kubelet gets)."""
        from kubernetes import client

        spec = client.V1TokenRequestSpec(audiences=list(audiences) if audiences else None,
                                         expiration_seconds=expiration_seconds)
        resp = self.core().create_namespaced_service_account_token(
            service_account, namespace, client.AuthenticationV1TokenRequest(spec=spec))
        return resp.status.token

    def kubeconfig_for_sa(self, namespace: str, service_account: str,
                          expiration_seconds: int = 3600) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount, defaulting to its namespace.

        In-cluster config (KUBERNETES_SERVICE_HOST) cannot point at a loopback plane, so a
        process that should run "as a pod" gets this file in KUBECONFIG instead.
        """
        token = self.token_for(namespace, service_account, expiration_seconds)
        path = self.scratch / f"sa-{namespace}-{service_account}.kubeconfig"
        return write_kubeconfig(path, self.server, self.ca_file, {"token": token},
                                namespace=namespace, name=f"{namespace}-{service_account}")

    def env_for_sa(self, namespace: str, service_account: str, **extra: str) -> dict[str, str]:
        """Environment for a process acting as a pod with that ServiceAccount."""
        path = self.kubeconfig_for_sa(namespace, service_account)
        env = {k: v for k, v in os.environ.items()
               if k not in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")}
        return {**env, "KUBECONFIG": str(path), "POD_NAMESPACE": namespace,
                "POD_SERVICE_ACCOUNT": service_account, **extra}

    # -- waiting ----------------------------------------------------------------------------

    @staticmethod
    def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 60,
                   interval: float = 0.2) -> None:
        """Poll until ``predicate`` holds (exceptions count as "not yet")."""
        wait_for(what, predicate, timeout, interval=interval)


def dumps_manifest(*docs: Mapping[str, Any]) -> str:
    """YAML stream for ``kubectl apply -f -``."""
    return yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False)
