"""Server-side resource readings with psutil: RSS and CPU time of a set of processes.

A server is a set of root PIDs plus all their descendants (Clarion's `clarion up` runs Redis,
the WebSocket node, the API and workers as children), read afresh at every sample.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class ProcSample:
    at: float
    cpu_s: dict[int, float] = field(default_factory=dict)      # pid -> user+system seconds
    rss: dict[int, int] = field(default_factory=dict)          # pid -> bytes
    names: dict[int, str] = field(default_factory=dict)

    @property
    def rss_total(self) -> int:
        return sum(self.rss.values())


class ServerProcesses:
    def __init__(self, pids: list[int], include_children: bool = True) -> None:
        self.pids = list(pids)
        self.include_children = include_children

    def processes(self) -> list[psutil.Process]:
        seen: dict[int, psutil.Process] = {}
        for pid in self.pids:
            try:
                root = psutil.Process(pid)
                family = [root] + (root.children(recursive=True) if self.include_children else [])
            except psutil.NoSuchProcess:
                continue
            for proc in family:
                seen.setdefault(proc.pid, proc)
        return list(seen.values())

    def sample(self) -> ProcSample:
        sample = ProcSample(at=time.monotonic())
        for proc in self.processes():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    sample.cpu_s[proc.pid] = times.user + times.system
                    sample.rss[proc.pid] = proc.memory_info().rss
                    sample.names[proc.pid] = process_label(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return sample


def cpu_delta(before: ProcSample, after: ProcSample) -> float:
    """CPU seconds spent between two samples (processes born in between count fully)."""
    return sum(cpu - before.cpu_s.get(pid, 0.0) for pid, cpu in after.cpu_s.items())


def cpu_by_name(before: ProcSample, after: ProcSample) -> dict[str, float]:
    """CPU seconds spent between two samples, summed per process label (a server's several
    processes of one kind, e.g. ``python3 gateway.cli api``, add up under one label)."""
    out: dict[str, float] = {}
    for pid, cpu in after.cpu_s.items():
        name = after.names[pid]
        out[name] = out.get(name, 0.0) + cpu - before.cpu_s.get(pid, 0.0)
    return out


def rss_breakdown(before: ProcSample, after: ProcSample) -> dict[str, int]:
    """Per-process RSS growth in bytes, keyed ``name[pid]``."""
    return {f"{after.names[pid]}[{pid}]": rss - before.rss.get(pid, 0)
            for pid, rss in after.rss.items()}


def process_label(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        cmd = []
    words = [os.path.basename(w) for w in cmd if not w.startswith("-")][:4]
    return " ".join(words) or proc.name()


def pids_listening_on(*ports: int) -> list[int]:
    """PIDs with a TCP socket listening on any of ``ports`` (needs permission to see them)."""
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports:
            if conn.pid:
                found.add(conn.pid)
    return sorted(found)


class MachineCpu:
    """Whole-machine busy % between construction and ``busy_pct()``."""

    def __init__(self) -> None:
        self.start = psutil.cpu_times()

    def busy_pct(self) -> float:
        end = psutil.cpu_times()
        total = sum(end) - sum(self.start)
        idle = (end.idle - self.start.idle) + (end.iowait - self.start.iowait)
        return 100.0 * (1 - idle / total) if total > 0 else 0.0


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
