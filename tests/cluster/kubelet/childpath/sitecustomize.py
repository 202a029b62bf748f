"""Cluster DNS for processes that the test harness's process kubelet runs as pods.

Python imports `sitecustomize` at start-up from the first directory on sys.path that has one; the
process kubelet puts this directory first on PYTHONPATH. It teaches `socket.getaddrinfo` (which
asyncio, aiohttp, urllib and requests all use) the names CoreDNS would answer in a pod:
`<service>.<namespace>.svc.cluster.local`, and the shorter forms through the pod's search path
(`<ns>.svc.cluster.local svc.cluster.local cluster.local`, ndots 5). Answers come from the JSON
table the kubelet keeps up to date (KUBEROLLOUT_PROCESS_DNS). A name under the cluster domain
that has no record fails with "Name or service not known", as NXDOMAIN would; every other name
goes to the system resolver. Stdlib only: it runs before anything else in the process.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys

_TABLE_PATH = os.environ.get("KUBEROLLOUT_PROCESS_DNS", "")
_NAMESPACE = os.environ.get("KUBEROLLOUT_PROCESS_NAMESPACE", "")
_cache: dict = {"key": None, "domain": "cluster.local", "records": {}}


def _table() -> tuple[str, dict]:
    try:
        st = os.stat(_TABLE_PATH)
    except OSError:
        return _cache["domain"], {}
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    if key != _cache["key"]:
        try:
            with open(_TABLE_PATH) as f:
                data = json.load(f)
            _cache.update(key=key, domain=data.get("domain", "cluster.local"), records=data.get("records", {}))
        except (OSError, ValueError):
            pass
    return _cache["domain"], _cache["records"]


def resolve(host: str, depth: int = 0) -> list[str] | None:
    """IPs for a cluster name; [] for an unknown name in the cluster's zone; None otherwise."""
    if not host or depth > 8:
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    domain, records = _table()
    name = host.lower()
    absolute = name.endswith(".")
    name = name.rstrip(".")
    if absolute or name.endswith("." + domain):
        candidates = [name]
    else:
        search = ([f"{_NAMESPACE}.svc.{domain}"] if _NAMESPACE else []) + [f"svc.{domain}", domain]
        candidates = [f"{name}.{s}" for s in search] if name.count(".") < 5 else [name]
    for cand in candidates:
        if cand in records:
            answer = records[cand]
            if isinstance(answer, dict):  # ExternalName: a CNAME
                target = answer.get("cname", "")
                found = resolve(target, depth + 1)
                return found if found is not None else _system(target)
            return list(answer)
    in_zone = name.endswith("." + domain) or name.endswith(".svc") or ".svc." in name
    return [] if in_zone else None


_getaddrinfo = socket.getaddrinfo
_gethostbyname = socket.gethostbyname
_gethostbyname_ex = socket.gethostbyname_ex


def _system(host: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in _getaddrinfo(host, None, socket.AF_INET)})
    except OSError:
        return []


def _nxdomain(host: object) -> socket.gaierror:
    return socket.gaierror(socket.EAI_NONAME, f"Name or service not known (cluster DNS: {host!r})")


def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002 - socket's signature
    name = host.decode() if isinstance(host, bytes) else host
    ips = resolve(name) if isinstance(name, str) else None
    if ips is None:
        return _getaddrinfo(host, port, family, type, proto, flags)
    if not ips:
        raise _nxdomain(host)
    out = []
    for ip in ips:
        try:
            out += _getaddrinfo(ip, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            continue  # another address family than asked for
    if not out:
        raise socket.gaierror(socket.EAI_ADDRFAMILY, f"no address of the requested family for {host!r}")
    return out


def gethostbyname(host):
    ips = resolve(host)
    if ips is None:
        return _gethostbyname(host)
    if not ips:
        raise _nxdomain(host)
    return ips[0]


def gethostbyname_ex(host):
    ips = resolve(host)
    if ips is None:
        return _gethostbyname_ex(host)
    if not ips:
        raise _nxdomain(host)
    return host, [], list(ips)


def _chain_next_sitecustomize() -> None:
    """Run the sitecustomize this one shadows (a distribution's or a venv's), if any."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None and spec.origin != os.path.abspath(__file__):
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


if _TABLE_PATH:
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
_chain_next_sitecustomize()
