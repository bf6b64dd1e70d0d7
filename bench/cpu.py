"""Where the machine's CPU went during a measurement, by process group, read from /proc.

On 2 shared cores the client, the web or worker processes, Redis, MongoDB, PostgreSQL and
whatever else runs on the machine all compete; the split says which layer a rate is bound by.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu: dict[int, float]  # pid -> CPU seconds so far
    parent: dict[int, int]
    command: dict[int, str]


def snapshot() -> Snapshot:
    cpu: dict[int, float] = {}
    parent: dict[int, int] = {}
    command: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        # The command name may hold spaces and parentheses; the fields follow the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        command[pid] = cmdline or stat[stat.index("(") + 1 : stat.rindex(")")]
    return Snapshot(time.monotonic(), cpu, parent, command)


def descends_from(snap: Snapshot, pid: int, root: int) -> bool:
    seen = 0
    while pid and seen < 64:
        if pid == root:
            return True
        pid = snap.parent.get(pid, 0)
        seen += 1
    return False


def usage(
    before: Snapshot, after: Snapshot, group: Callable[[Snapshot, int], str]
) -> dict[str, float]:
    """CPU seconds per group between two snapshots; processes born meanwhile count in full."""
    spent: dict[str, float] = defaultdict(float)
    for pid, seconds in after.cpu.items():
        delta = seconds - before.cpu.get(pid, 0.0)
        if delta > 0:
            spent[group(after, pid)] += delta
    return dict(spent)


def add(total: dict[str, float], more: dict[str, float]) -> None:
    for name, seconds in more.items():
        total[name] = total.get(name, 0.0) + seconds


def describe(spent: dict[str, float], *, wall: float, per: int, unit: str) -> str:
    """`group x.x ms/unit` for each group, then idle, on one line."""
    capacity = wall * (os.cpu_count() or 1)
    parts = [
        f"{name} {1000 * seconds / per:.2f}"
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1])
        if seconds >= 0.005 * capacity
    ]
    idle = max(0.0, capacity - sum(spent.values()))
    return (
        f"CPU ms per {unit}: " + ", ".join(parts) + f"; idle {100 * idle / capacity:.0f} % of "
        f"{os.cpu_count()} CPUs over {wall:.1f} s"
    )


def resident_mib(root: int) -> list[tuple[str, float]]:
    """(command, resident MiB) of `root` and every process descending from it."""
    snap = snapshot()
    found = []
    for pid, command in snap.command.items():
        if not descends_from(snap, pid, root):
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kib = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
        found.append((command, kib / 1024))
    return found
