"""Push delivery benchmark: one Beams publish to N devices on one interest, through the local
FCM and APNs emulators (tests/emulators, answering at once), one platform at a time.

The FCM emulator runs in this process (its own event-loop thread); the APNs one by default is
tests/emulators/apns_fast.py, granian (HTTP/2 and TLS in Rust) in a process of its own with the
same checks as the tests' pure-Python h2 emulator (``--apns-emulator h2``), which costs more CPU
per request than the worker and would bound the rate. Each emulator's own CPU (thread or
process) is reported apart.

    .venv/bin/python -m bench.push_bench                       # 100,000 devices, fcm then apns
    .venv/bin/python -m bench.push_bench --devices 20000 --platform apns
    .venv/bin/python -m bench.push_bench --fcm-concurrency 64 --apns-concurrency 1000

What runs (all real, on 127.0.0.1): an embedded redis-server; the API under gunicorn
(``gateway.api.server.run_api``, 1 process, plain HTTP); for each platform a fresh Celery worker
process (``workers.main.run_worker``, queue ``push``, prefork pool of ``--worker-concurrency``;
``--workers`` of them, which send the parts of a publish split by ``push.split_devices`` at once);
the emulators in this process. Devices are written straight into Redis with
``DeviceStore.register_many`` (pipelined). The publish goes through the API
(``POST /publish_api/v1/instances/{id}/publishes/interests``); the clock runs from just before
that POST to the first poll of ``GET …/publishes/{id}`` (every 50 ms) that shows ``done``.

Reported per platform: notifications/s (devices / that time), the worker-side time
(``finishedAt - createdAt`` of the publish), correctness (every device delivered exactly once,
per the emulator), the worker's RSS (psutil, pool and main process: after start-up, peak
sampled every 50 ms, every ~10 s over the run, and the kernel's high-water mark VmHWM), and
CPU seconds of each party (worker, emulators = this process, API, Redis) with the machine's
total, so the load other jobs put on the shared CPUs shows ("other CPU").

Results: ``bench/results/push-<date>.md`` (``-2``, ``-3``… if it exists), logs in
``/tmp/clarion-bench-logs/push-<time>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as platform_mod
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the emulators live with the tests
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emulators.apns import ApnsEmulator  # noqa: E402
from emulators.apns_fast import GranianApnsEmulator  # noqa: E402
from emulators.fcm import FcmEmulator  # noqa: E402

from config.settings import Settings, settings_to_env  # noqa: E402
from gateway.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from gateway.state.devices import DeviceStore  # noqa: E402

APP_ID, SECRET = "bench", "bench-beams-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}
PAYLOADS = {
    "fcm": {"notification": {"title": "Bench", "body": "hello"}, "data": {"k": "v"}},
    "apns": {"aps": {"alert": {"title": "Bench", "body": "hello"}}},
}

_RUN_API = (
    "from config import load_settings; from gateway.api.server import run_api; "
    "run_api(load_settings())"
)
_RUN_WORKER = (
    "from config import load_settings; from workers.main import run_worker; "
    "run_worker(load_settings(), queues=('push',), concurrency={concurrency})"
)


# --------------------------------------------------------------------------- processes


class Proc:
    def __init__(self, name: str, code: str, settings: Settings, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        env = {**os.environ, **settings_to_env(settings)}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            env.pop(var, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def family(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def thread_cpu_seconds(native_id: int) -> float:
    """CPU seconds of one thread of this process (an emulator's event-loop thread)."""
    for t in psutil.Process().threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    return 0.0


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def vm_hwm(pid: int) -> int:
    """The kernel's RSS high-water mark of a process, in bytes (0 if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    """Peak RSS of process families (sum, and the largest single process), every 50 ms."""

    def __init__(self, procs: list[Proc]) -> None:
        super().__init__(daemon=True)
        self.procs = procs
        self.last_total = 0
        self.peak_total = 0
        self.peak_single = 0
        self.hwm: dict[int, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total = 0
            for p in (p for proc in self.procs for p in proc.family()):
                try:
                    rss = p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                self.peak_single = max(self.peak_single, rss)
                self.hwm[p.pid] = max(self.hwm.get(p.pid, 0), vm_hwm(p.pid))
            self.peak_total = max(self.peak_total, total)
            self.last_total = total
            self._halt.wait(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    platform: str
    devices: int
    register_s: float
    wall_s: float
    worker_s: float | None
    status: dict[str, Any]
    exactly_once: bool
    duplicates: int
    missing: int
    rss_ready: int
    rss_peak_total: int
    rss_peak_single: int
    hwm: dict[int, int]
    cpu: dict[str, float] = field(default_factory=dict)
    # (seconds since the publish, delivered, RSS of all worker processes) every ~10 s
    timeline: list[tuple[float, int, int]] = field(default_factory=list)
    loadavg_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loadavg_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def rate(self) -> float:
        return self.devices / self.wall_s

    @property
    def worker_rate(self) -> float | None:
        return self.devices / self.worker_s if self.worker_s else None


def make_settings(
    redis_url: str,
    fcm: FcmEmulator,
    apns: ApnsEmulator | GranianApnsEmulator,
    args: argparse.Namespace,
    port: int,
) -> Settings:
    return Settings(
        redis={"url": redis_url, "key_prefix": "pbench:"},
        api={"host": "127.0.0.1", "port": port, "workers": 1, "threads": 4},
        worker={"concurrency": args.worker_concurrency},
        log_level="info",
        apps=[
            {
                "id": APP_ID,
                "key": "bench-key",
                "secret": "bench-app-secret",
                "push": {
                    "fcm_service_account": fcm.service_account(),
                    "apns_key": apns.key_pem,
                    "apns_key_id": apns.key_id,
                    "apns_team_id": apns.team_id,
                    "apns_topic": apns.topic,
                    "beams_secret_key": SECRET,
                },
            }
        ],
        push={
            "fcm_base_url": fcm.base_url,
            "apns_host": "localhost",
            "apns_port": apns.port,
            "apns_ca_file": apns.ca_file,
            "send_timeout": 10.0,
            "page_size": args.page_size,
            "split_devices": args.split_devices,
            "max_parts": args.max_parts,
            "fcm_concurrency": args.fcm_concurrency,
            "fcm_connections": args.fcm_connections,
            "apns_concurrency": args.apns_concurrency,
            "apns_max_connections": args.apns_connections,
            "apns_client": args.apns_client,
        },
    )


def wait_until(predicate: Any, timeout: float, what: str, check: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_platform(
    name: str,
    n: int,
    settings: Settings,
    api_url: str,
    api: Proc,
    redis_proc: psutil.Process,
    emulator_count: Any,
    emulator_cpu: Any,
    log_dir: Path,
    timeout: float,
    n_workers: int = 1,
) -> Result:
    client = redis.Redis.from_url(settings.redis.url or "")
    store = DeviceStore(client, settings.redis.key_prefix)
    interest = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    if name == "fcm":
        tokens = [f"fcm-bench-{i}-{uuid.uuid4().hex}" for i in range(n)]
    else:
        tokens = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(n)]
    started = time.perf_counter()
    store.register_many(APP_ID, name, tokens, [interest])
    register_s = time.perf_counter() - started
    print(f"[{name}] registered {n:,} devices in {register_s:.1f} s", flush=True)

    code = _RUN_WORKER.format(concurrency=settings.worker.concurrency)
    workers = [Proc(f"worker-{name}-{n}", code, settings, log_dir) for n in range(n_workers)]

    def worker_family() -> list[psutil.Process]:
        return [p for w in workers for p in w.family()]

    def check_workers() -> None:
        for w in workers:
            w.check_alive()

    try:
        for w in workers:
            wait_until(lambda w=w: " ready." in w.log(), 60, "the worker", check_workers)
        time.sleep(0.5)  # let the pool child finish importing
        rss_ready = sum(p.memory_info().rss for p in worker_family())
        sampler = RssSampler(workers)
        sampler.start()
        me = psutil.Process()
        parties = {
            "worker": worker_family,
            "emulator (bench process)": lambda: [me],
            emulator_cpu[0]: emulator_cpu[1],
            "API (gunicorn)": api.family,
            "redis-server": lambda: [redis_proc],
        }
        cpu0 = {k: _cpu(f()) for k, f in parties.items()}
        machine0 = psutil.cpu_times()
        loadavg = os.getloadavg()

        t0 = time.perf_counter()
        resp = requests.post(
            f"{api_url}/publish_api/v1/instances/{APP_ID}/publishes/interests",
            json={"interests": [interest], name: PAYLOADS[name]},
            headers=AUTH,
            timeout=10,
        )
        resp.raise_for_status()
        pid = resp.json()["publishId"]
        status_url = f"{api_url}/publish_api/v1/instances/{APP_ID}/publishes/{pid}"
        status: dict[str, Any] = {}
        last_print = t0
        timeline: list[tuple[float, int, int]] = []
        while True:
            status = requests.get(status_url, headers=AUTH, timeout=10).json()
            if status.get("status") == "done":
                break
            now = time.perf_counter()
            if now - t0 > timeout:
                raise TimeoutError(f"{name}: publish not done after {timeout} s: {status}")
            if now - last_print > 10:
                last_print = now
                timeline.append((now - t0, int(status.get("delivered") or 0), sampler.last_total))
                print(
                    f"[{name}] {now - t0:.0f} s: {status.get('delivered')} delivered, "
                    f"worker RSS {mb(sampler.last_total)} MB",
                    flush=True,
                )
            check_workers()
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        machine1 = psutil.cpu_times()
        cpu = {k: _cpu(f()) - cpu0[k] for k, f in parties.items()}
        loadavg_after = os.getloadavg()
        busy = lambda t: t.user + t.system + t.nice + t.irq + t.softirq + t.steal  # noqa: E731
        cpu["machine (all processes)"] = busy(machine1) - busy(machine0)
        cpu["other (not the above)"] = cpu["machine (all processes)"] - sum(
            v for k, v in cpu.items() if k not in ("machine (all processes)", THREAD)
        )
        sampler.stop()
    finally:
        for w in workers:
            w.stop()
    counts = emulator_count(tokens)
    duplicates = sum(1 for c in counts if c > 1)
    missing = sum(1 for c in counts if c == 0)
    worker_s = (
        status["finishedAt"] - status["createdAt"]
        if status.get("finishedAt") and status.get("createdAt")
        else None
    )
    client.close()
    return Result(
        platform=name,
        devices=n,
        register_s=register_s,
        wall_s=wall,
        worker_s=worker_s,
        status=status,
        exactly_once=duplicates == 0 and missing == 0 and status.get("delivered") == n,
        duplicates=duplicates,
        missing=missing,
        rss_ready=rss_ready,
        rss_peak_total=sampler.peak_total,
        rss_peak_single=sampler.peak_single,
        hwm=sampler.hwm,
        cpu=cpu,
        timeline=timeline,
        loadavg_before=loadavg,
        loadavg_after=loadavg_after,
    )


THREAD = "emulator alone (its thread in the bench process)"
EMULATOR_PROCESS = "emulator process (granian)"


def _cpu(what: Any) -> float:
    """CPU seconds of processes, or a thread's figure as it is."""
    return what if isinstance(what, float) else cpu_seconds(what)


# --------------------------------------------------------------------------- report


def mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def report(results: list[Result], args: argparse.Namespace, notes: list[str]) -> str:
    cpu_model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [
        f"# push: one publish to many devices ({datetime.now():%Y-%m-%d %H:%M})",
        "",
        f"Machine: {psutil.cpu_count()} vCPU {cpu_model}, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GB, Python {platform_mod.python_version()}; "
        "worker, emulators, API, Redis and this driver share the CPUs (loopback only), and other "
        "engineers' jobs ran on the same 2 cores (see the CPU rows and load average).",
        "",
        f"Command: `.venv/bin/python -m bench.push_bench {' '.join(sys.argv[1:])}`",
        "",
        f"Workers: {args.workers} Celery worker process(es), prefork pool of "
        f"{args.worker_concurrency} each; a publish of more than {args.split_devices:,} devices "
        f"is split into parts (one per {args.split_devices:,} devices, at most "
        f"{args.max_parts}) that the worker processes send at once; in each, on one event "
        f"loop, up to {args.fcm_concurrency} FCM sends in flight "
        f"over {args.fcm_connections} keep-alive HTTP/1.1 connections "
        "(workers/providers/http1.py), and "
        f"up to {args.apns_concurrency} APNs sends as concurrent HTTP/2 streams over "
        f"{args.apns_connections} connections ({args.apns_client} client, "
        f"{args.apns_emulator} emulator); "
        f"devices read {args.page_size} per SSCAN page.",
        "",
        "| figure | " + " | ".join(r.platform.upper() for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]

    def row(label: str, fn: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(fn(r) for r in results) + " |")

    row("devices on the interest", lambda r: f"{r.devices:,}")
    row("**notifications/s** (publish POST -> status done)", lambda r: f"**{r.rate:,.0f}**")
    row("publish POST -> status done (s)", lambda r: f"{r.wall_s:.2f}")
    row(
        "worker-side: accepted -> finished (s)",
        lambda r: f"{r.worker_s:.2f}" if r.worker_s else "-",
    )
    row(
        "delivered / failed / retried / removed",
        lambda r: "{delivered} / {failed} / {retried} / {removed}".format(**r.status),
    )
    row(
        "every device exactly once (emulator count)",
        lambda r: "yes" if r.exactly_once else f"NO ({r.duplicates} dup, {r.missing} missing)",
    )
    row("worker RSS after start-up, MB (main + pool)", lambda r: mb(r.rss_ready))
    row("worker RSS peak, MB (main + pool, sampled 50 ms)", lambda r: mb(r.rss_peak_total))
    row("worker RSS peak of the largest process, MB", lambda r: mb(r.rss_peak_single))
    row(
        "worker VmHWM per process, MB",
        lambda r: " + ".join(mb(v) for v in sorted(r.hwm.values(), reverse=True)),
    )
    for party in dict.fromkeys(k for r in results for k in r.cpu):
        row(f"CPU s: {party}", lambda r, p=party: f"{r.cpu[p]:.1f}" if p in r.cpu else "-")
    row("CPU us per notification: worker", lambda r: f"{r.cpu['worker'] / r.devices * 1e6:.0f}")
    row(
        "CPU us per notification: emulator (bench process: emulator + this driver)",
        lambda r: f"{r.cpu['emulator (bench process)'] / r.devices * 1e6:.0f}",
    )
    row(
        "**CPU us per request: emulator alone**",
        lambda r: f"**{r.cpu.get(THREAD, r.cpu.get(EMULATOR_PROCESS, 0)) / r.devices * 1e6:.0f}**",
    )
    row(
        "machine busy (of 2 cores) during the run",
        lambda r: f"{r.cpu['machine (all processes)'] / r.wall_s / psutil.cpu_count() * 100:.0f} %",
    )
    row(
        "load average before (1/5/15 min)", lambda r: "/".join(f"{x:.2f}" for x in r.loadavg_before)
    )
    row(
        "load average at the end (1/5/15 min)",
        lambda r: "/".join(f"{x:.2f}" for x in r.loadavg_after),
    )
    row("devices written to Redis (s, pipelined)", lambda r: f"{r.register_s:.1f}")
    for r in results:
        if r.timeline:
            lines += [
                "",
                f"{r.platform.upper()} over the run (RSS of all worker processes, main + pool):",
                "",
                "| s | delivered | worker RSS, MB |",
                "|---|---|---|",
            ]
            lines += [f"| {t:.0f} | {d:,} | {mb(m)} |" for t, d, m in r.timeline]
    lines.append("")
    lines.extend(f"- {n}" for n in notes)
    lines.append("")
    lines.append("Raw:")
    lines.append("")
    lines.append("```json")
    lines.append(
        json.dumps(
            [
                {
                    "platform": r.platform,
                    "devices": r.devices,
                    "rate": round(r.rate, 1),
                    "wall_s": round(r.wall_s, 3),
                    "worker_s": r.worker_s,
                    "status": r.status,
                    "rss_ready": r.rss_ready,
                    "rss_peak_total": r.rss_peak_total,
                    "rss_peak_single": r.rss_peak_single,
                    "vm_hwm": list(r.hwm.values()),
                    "cpu_s": {k: round(v, 2) for k, v in r.cpu.items()},
                    "timeline": r.timeline,
                    "loadavg_before": r.loadavg_before,
                    "loadavg_after": r.loadavg_after,
                }
                for r in results
            ],
            indent=1,
        )
    )
    lines.append("```")
    return "\n".join(lines) + "\n"


def output_path(out_dir: Path, suffix: str) -> Path:
    base = f"push-{datetime.now():%Y-%m-%d}{'-' + suffix if suffix else ''}"
    path = out_dir / f"{base}.md"
    n = 2
    while path.exists():
        path = out_dir / f"{base}-{n}.md"
        n += 1
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--platform", choices=("fcm", "apns", "both"), default="both")
    p.add_argument("--workers", type=int, default=1, help="worker processes (Celery workers)")
    p.add_argument("--worker-concurrency", type=int, default=1)
    p.add_argument(
        "--split-devices",
        type=int,
        default=50_000,
        help="push.split_devices (0: one publish is sent by one task run at a time)",
    )
    p.add_argument("--max-parts", type=int, default=16)
    p.add_argument("--fcm-concurrency", type=int, default=256)
    p.add_argument("--fcm-connections", type=int, default=64)
    p.add_argument("--apns-concurrency", type=int, default=500)
    p.add_argument("--apns-connections", type=int, default=4)
    p.add_argument("--apns-client", choices=("curl", "aioapns"), default="curl")
    p.add_argument(
        "--apns-emulator",
        choices=("granian", "h2"),
        default="granian",
        help="granian: HTTP/2 in Rust in a process of its own (emulators/apns_fast.py); "
        "h2: the tests' pure-Python emulator, in this process",
    )
    p.add_argument("--apns-port", type=int, default=0, help="the granian emulator's port")
    p.add_argument("--api-port", type=int, default=0, help="the API's port (0: a free one)")
    p.add_argument("--page-size", type=int, default=500)
    p.add_argument("--timeout", type=float, default=1200.0, help="per platform, seconds")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--suffix", default="", help="added to the result file name")
    p.add_argument("--note", action="append", default=[], help="a line for the report")
    args = p.parse_args(argv)

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(var, None)
    log_dir = Path(f"/tmp/clarion-bench-logs/push-{datetime.now():%Y%m%d-%H%M%S}")
    log_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="clarion-push-bench-"))
    platforms = ["fcm", "apns"] if args.platform == "both" else [args.platform]

    redis_server = EmbeddedRedis(tmp / "redis").start()
    fcm = FcmEmulator().start()
    if args.apns_emulator == "granian":
        apns: ApnsEmulator | GranianApnsEmulator = GranianApnsEmulator(
            tmp, args.apns_port or free_port()
        ).start()
    else:
        apns = ApnsEmulator(tmp).start()
        apns.record_messages = False
    fcm.record_messages = False
    api: Proc | None = None
    results: list[Result] = []
    try:
        port = args.api_port or free_port()
        settings = make_settings(redis_server.url, fcm, apns, args, port)
        api = Proc("api", _RUN_API, settings, log_dir)
        api_url = f"http://127.0.0.1:{port}"

        def api_ready() -> bool:
            try:
                return requests.get(f"{api_url}/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(api_ready, 30, "the API", api.check_alive)
        assert redis_server.process is not None
        redis_proc = psutil.Process(redis_server.process.pid)
        emulator_cpu = {
            "fcm": (THREAD, lambda: thread_cpu_seconds(fcm.thread.native_id)),
            "apns": (
                (EMULATOR_PROCESS, lambda: cpu_seconds(apns.family()))
                if isinstance(apns, GranianApnsEmulator)
                else (THREAD, lambda: thread_cpu_seconds(apns.thread.native_id))
            ),
        }
        counters = {
            "fcm": lambda tokens: [len(fcm.delivered.get(t, ())) for t in tokens],
            "apns": (
                apns.counts
                if isinstance(apns, GranianApnsEmulator)
                else lambda tokens: [len(apns.delivered.get(t, ())) for t in tokens]
            ),
        }
        for name in platforms:
            result = run_platform(
                name,
                args.devices,
                settings,
                api_url,
                api,
                redis_proc,
                counters[name],
                emulator_cpu[name],
                log_dir,
                args.timeout,
                args.workers,
            )
            print(
                f"[{name}] {result.devices:,} in {result.wall_s:.2f} s = {result.rate:,.0f}/s, "
                f"peak RSS {mb(result.rss_peak_total)} MB, exactly once: {result.exactly_once}",
                flush=True,
            )
            results.append(result)
    finally:
        if api is not None:
            api.stop()
        fcm.stop()
        apns.stop()
        redis_server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    path = output_path(args.out, args.suffix)
    path.write_text(report(results, args, args.note))
    print(f"wrote {path}; logs in {log_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
