"""Pod and Service addresses for the process kubelet: one loopback /16 per test session.

Linux routes all of 127.0.0.0/8 to `lo`, so any 127.x.y.z can be bound without privileges or
setup. Each process kubelet claims a block 127.B.0.0/16 with an exclusive `flock` on a lock file,
so pytest sessions running side by side on one machine (other developers, xdist workers) never
hand out the same pod IP; the lock dies with the process, so a crashed session frees its block.

Inside the block: pods get 127.B.0.1 - 127.B.127.254 (the node's podCIDR is 127.B.0.0/17),
Service proxies ("cluster IPs") 127.B.128.1 - 127.B.254.254, and the node itself 127.B.255.254.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import tempfile
from pathlib import Path

FIRST_BLOCK, LAST_BLOCK = 128, 254


class NoFreeBlock(RuntimeError):
    """Every 127.B.0.0/16 block in the range is held by another process kubelet."""


class NetBlock:
    """A claimed 127.B.0.0/16 and allocators for the two halves of it."""

    def __init__(self, block: int, lock_fd: int | None = None) -> None:
        self.block = block
        self._lock_fd = lock_fd
        self.pod_cidr = f"127.{block}.0.0/17"
        self.node_ip = f"127.{block}.255.254"
        self.pods = Allocator(f"127.{block}.0.0/17")
        self.services = Allocator(f"127.{block}.128.0/17", exclude={self.node_ip})

    @classmethod
    def claim(cls, lock_dir: Path | None = None) -> NetBlock:
        """Take the first block no other live process holds."""
        lock_dir = lock_dir or Path(tempfile.gettempdir())
        for block in range(FIRST_BLOCK, LAST_BLOCK + 1):
            path = lock_dir / f"kuberollout-netblock-127.{block}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return cls(block, fd)
        raise NoFreeBlock(f"all loopback blocks 127.{FIRST_BLOCK}-{LAST_BLOCK}.0.0/16 are in use "
                          f"(lock files {lock_dir}/kuberollout-netblock-*.lock)")

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


class Allocator:
    """Next-fit allocation of host addresses in a network: a freed address is reused only after
    every other one was handed out, so a client that still remembers a dead pod's IP (a router's
    worker list) does not reach a new pod by accident. Addresses ending in .0 or .255 are skipped
    (harmless on loopback, but they read like network and broadcast addresses)."""

    def __init__(self, cidr: str, exclude: set[str] | None = None) -> None:
        net = ipaddress.ip_network(cidr)
        self._base = int(net.network_address)
        self._size = net.num_addresses
        self._exclude = set(exclude or ())
        self._next = 1
        self.in_use: set[str] = set()

    def allocate(self) -> str:
        for _ in range(self._size):
            offset = self._next
            self._next = offset + 1 if offset + 2 < self._size else 1
            value = self._base + offset
            ip = str(ipaddress.IPv4Address(value))
            if value & 0xFF in (0, 255) or ip in self._exclude or ip in self.in_use:
                continue
            self.in_use.add(ip)
            return ip
        raise NoFreeBlock("address pool exhausted")

    def release(self, ip: str | None) -> None:
        if ip:
            self.in_use.discard(ip)
