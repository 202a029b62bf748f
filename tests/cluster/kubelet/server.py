"""The kubelet's HTTPS endpoint, for `kubectl logs` on process pods.

The apiserver serves `pods/log` by calling the node's kubelet at its InternalIP and
`daemonEndpoints.kubeletEndpoint.Port` (`GET /containerLogs/<ns>/<pod>/<container>`). The test
plane does not give the apiserver a kubelet CA, so it does not verify this server's certificate,
which is a throwaway self-signed one. Supported: `tailLines`, `limitBytes`, `previous`, `follow`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import logging
import ssl
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


def self_signed(directory: Path, ip: str) -> ssl.SSLContext:
    """A serving context with a fresh self-signed certificate for ``ip``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "process-kubelet")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "kubelet.crt", directory / "kubelet.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


def container_logs(pods_dir: Path, namespace: str, pod: str, container: str) -> list[Path]:
    """Log files of a container, oldest restart first (newest pod of that name)."""
    dirs = sorted(pods_dir.glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime)
    if not dirs:
        return []
    return sorted((dirs[-1] / container).glob("*.log"), key=lambda p: int(p.stem))


def tail(data: bytes, lines: int | None, limit: int | None) -> bytes:
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
    if limit is not None:
        data = data[:limit]
    return data


class KubeletServer:
    """Serves /containerLogs and /healthz on the node IP."""

    def __init__(self, pods_dir: Path, host: str, certs: Path) -> None:
        self.pods_dir = pods_dir
        self.host = host
        self.certs = certs
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_get("/healthz", lambda _: web.Response(text="ok"))
        app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.logs)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self_signed(self.certs, self.host))
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def logs(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        files = container_logs(self.pods_dir, request.match_info["ns"], request.match_info["pod"],
                               request.match_info["container"])
        if q.get("previous") == "true":
            files = files[:-1]
        if not files:
            raise web.HTTPNotFound(text=f"no logs for container {request.match_info['container']!r} "
                                        f"of pod {request.match_info['pod']!r}")
        path = files[-1]
        lines = int(q["tailLines"]) if "tailLines" in q else None
        limit = int(q["limitBytes"]) if "limitBytes" in q else None
        data = tail(path.read_bytes(), lines, limit)
        if q.get("follow") != "true":
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse()
        resp.content_type = "text/plain"
        await resp.prepare(request)
        await resp.write(data)
        offset = path.stat().st_size
        while True:  # until the client goes away
            await asyncio.sleep(0.5)
            size = path.stat().st_size
            if size > offset:
                with open(path, "rb") as f:
                    f.seek(offset)
                    await resp.write(f.read(size - offset))
                offset = size

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
