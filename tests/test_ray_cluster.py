"""A local Ray started by parlour listens on loopback only (read from /proc, as ``ss -ltnp``
would show it): its GCS, raylet, workers and agents are not reachable from the network."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parlour.cluster.ray_cluster import connect

# Started in a process of its own: the tests' own Ray (tests/ray_local.py) is not parlour's.
LOCAL_NODE = """
import sys
from parlour.cluster.ray_cluster import connect, disconnect
connect(num_cpus=1)
print("up", flush=True)
sys.stdin.read()
disconnect()
"""


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, _, rest = stat.read_text().partition(" (")
            children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def socket_inodes(pids: set[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    return inodes


def listening() -> dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every listening TCP socket of this machine: inode -> the address it is bound to."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            raw = bytes.fromhex(fields[1].split(":")[0])
            # the kernel prints each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            address = ipaddress.ip_address(packed)
            if width == 32 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            found[fields[9]] = address
    return found


def test_a_local_ray_listens_on_loopback_only():
    node = subprocess.Popen([sys.executable, "-c", LOCAL_NODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert node.stdout.readline().strip() == "up"
        mine = socket_inodes(descendants(node.pid))
        bound = {inode: address for inode, address in listening().items() if inode in mine}
        assert len(bound) >= 3, bound  # the GCS, the raylet's two servers, at least
        assert all(address.is_loopback for address in bound.values()), sorted(map(str, bound.values()))
    finally:
        node.stdin.close()
        node.wait(60)


def test_a_unit_test_that_would_start_ray_fails_at_once_naming_the_way_to_do_it():
    with pytest.raises(RuntimeError, match=r"this test would start Ray: .* tests\.ray_local\.local_ray\(\)"):
        connect(num_cpus=1)
