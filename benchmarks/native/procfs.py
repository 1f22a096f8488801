"""What the stream benchmark reads about processes and the machine from /proc: CPU time and
RSS of a process group (a proxy and all its workers), and the kernel's listen-queue drops."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_group(leader: int) -> list[int]:
    """The live processes of the group `leader` started (every worker of a proxy)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(int(entry.name))[2]) == leader:
                    members.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return members


@dataclass(frozen=True)
class Usage:
    """Totals over some processes since they started."""

    cpu_s: float  # user + system time (/proc/PID/stat, clock ticks)
    runnable_wait_s: float  # runnable but waiting for a CPU (/proc/PID/task/*/schedstat)
    rss_bytes: int


def _runnable_wait_ns(pid: int) -> int:
    """Time the process's threads were ready to run while another task had their CPU: the
    share of the core that other processes took from it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError):
            continue  # a thread that ended, or a kernel without schedstats
    return total


def usage(pids: list[int]) -> Usage:
    cpu, wait_ns, rss = 0.0, 0, 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
            wait_ns += _runnable_wait_ns(pid)
        except OSError:
            continue  # it ended
        cpu += (int(fields[11]) + int(fields[12])) * CLOCK_TICK_S
    return Usage(cpu, wait_ns / 1e9, rss)


def listen_overflows() -> int:
    """The machine's count of connections dropped because a listen queue was full (a proxy
    accepting too slowly; its clients retry the SYN after 1 s, then 3 s)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenOverflows"])
    return 0
