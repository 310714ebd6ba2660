"""Starting, watching and stopping Clarion's child processes (used by `clarion up`, `clarion ws
--processes N` and the end-to-end test harness).

Each child runs ``python -m gateway.cli <command>`` with the parent's settings passed through
``config.settings_to_env``. Children get their own session (process group), so a Ctrl-C in the
terminal reaches only the supervisor, which then stops them in order; on Linux they also get a
parent-death signal, so a supervisor that is killed outright leaves no orphans behind. A child
that dies is restarted with backoff (``RestartPolicy``); one that keeps dying is given up on,
and the supervisor's caller stops the rest and says why.
"""

from __future__ import annotations

import ctypes
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from config import Settings, settings_to_env
from gateway.embedded_redis import EmbeddedRedis

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:  # pragma: no cover - no libc symbol: orphans are then possible
            pass


def child_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: the parent's, minus settings sources, plus ``settings``."""
    env = dict(os.environ if base is None else base)
    for name in list(env):
        # The child must load exactly ``settings``: a CLARION_CONFIG or CLARION_* variable
        # would be merged again on top of it.
        if name.startswith("CLARION_"):
            del env[name]
    env.update(settings_to_env(settings))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", *args]


class Child:
    """One supervised child process, in its own process group."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        log_path: str | Path | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = Path(log_path) if log_path else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self._log = None

    @classmethod
    def cli(cls, name: str, settings: Settings, *args: str, **kwargs: object) -> Child:
        return cls(name, cli_command(*args), env=child_env(settings), **kwargs)  # type: ignore[arg-type]

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> Child:
        """Start the child. Its parent-death signal fires when the *thread* that started it
        ends, so start children from a thread that lives as long as they should (the main
        thread, as `clarion up` and the test harness do)."""
        out = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
            out = self._log
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
            preexec_fn=_child_setup,  # noqa: PLW1509 - setsid + prctl only
        )
        return self

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: int) -> None:
        if self.alive:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process left in the child's group (its own children included)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float = 10.0, signalled: bool = False) -> int | None:
        """SIGTERM (unless ``signalled`` already), wait up to ``timeout``, then SIGKILL the whole
        group; the exit code."""
        if self.process is None:
            return None
        if not signalled:
            self.send(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group(signal.SIGKILL)
            self.process.wait()
        # Whatever the child left behind in its group (pool processes, gunicorn workers).
        self.kill_group(signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.process.returncode

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]

    def describe_exit(self) -> str:
        code = self.poll()
        if code is None:
            return f"{self.name} is running (pid {self.pid})"
        if code < 0:
            try:
                sig = signal.Signals(-code).name
            except ValueError:
                sig = str(-code)
            return f"{self.name} (pid {self.pid}) was killed by {sig}"
        return f"{self.name} (pid {self.pid}) exited with code {code}"


class ChildDied(RuntimeError):
    def __init__(self, child: Child) -> None:
        self.child = child
        tail = child.log_tail()
        super().__init__(child.describe_exit() + (f"\n--- log tail ---\n{tail}" if tail else ""))


def probe_host(host: str) -> str:
    """Where to reach a server that listens on ``host`` from this machine."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


# The probes ask our own children on this host: the certificate names the public host name,
# which need not resolve here, so it is not checked.
_PROBE_TLS = ssl.create_default_context()
_PROBE_TLS.check_hostname = False
_PROBE_TLS.verify_mode = ssl.CERT_NONE


def http_ready(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout,  # noqa: S310 - local URL
                                    context=_PROBE_TLS if url.startswith("https:") else None
                                    ) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_http_ready(
    url: str,
    child: Child | None = None,
    timeout: float = 30.0,
    interval: float = 0.1,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Poll ``url`` until it answers 200; raise ChildDied if ``child`` exits meanwhile. Returns
    early when ``cancelled()`` (a stop was requested)."""
    deadline = time.monotonic() + timeout
    while not cancelled():
        if child is not None and not child.alive:
            raise ChildDied(child)
        if http_ready(url):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not ready after {timeout:.0f}s")
        time.sleep(interval)


def _ping_count(app: object, timeout: float) -> int:
    try:
        return len(app.control.ping(timeout=timeout) or [])  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - readiness probe: any failure means "not yet"
        return 0


def wait_workers_ready(
    settings: Settings,
    children: Sequence[Child],
    timeout: float = 60.0,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Wait until as many Celery workers as ``children`` answer a ping (``inspect ping``),
    raising ChildDied if one of them exits meanwhile."""
    from workers.celery_app import create_celery

    app = create_celery(settings)
    deadline = time.monotonic() + timeout
    try:
        while not cancelled():
            for child in children:
                if not child.alive:
                    raise ChildDied(child)
            if _ping_count(app, timeout=1.0) >= len(children):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(children)} worker(s) did not answer a ping in {timeout:.0f}s"
                )
            time.sleep(0.2)
    finally:
        app.close()


class SessionRedis(EmbeddedRedis):
    """An EmbeddedRedis in its own session (a terminal's Ctrl-C does not reach it before the
    processes that use it are stopped) that also stops if its parent dies. Supervised like a
    child (``name``, ``alive``, ``describe_exit``), restarted on the same data directory."""

    name = "redis"

    def start(self, timeout: float = 10.0) -> SessionRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_child_setup,  # noqa: PLW1509
        )
        self.wait_ready(timeout)
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe_exit(self) -> str:
        code = None if self.process is None else self.process.poll()
        return f"redis (port {self.port}) " + ("is running" if code is None
                                               else f"exited with code {code}")

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """Nothing to do: redis-server starts no processes of its own."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """How a supervisor restarts a child that died: after ``first_delay`` seconds, doubling
    while it keeps dying, up to ``max_delay``; it gives up on a child that died
    ``max_failures`` times within ``window`` seconds (a crash loop is a problem to report, not
    to hide)."""

    first_delay: float = 0.5
    max_delay: float = 10.0
    max_failures: int = 5
    window: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.first_delay * 2 ** (failures - 1), self.max_delay))


class Supervised(Protocol):
    name: str

    @property
    def alive(self) -> bool: ...

    def start(self) -> object: ...

    def describe_exit(self) -> str: ...

    def kill_group(self, sig: int = signal.SIGKILL) -> None: ...


class Supervisor:
    """Children started in order, stopped in reverse order, restarted when they die."""

    def __init__(self, policy: RestartPolicy | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.children: list[Child] = []
        self.policy = policy or RestartPolicy()
        self.say = say or (lambda text: print(text, file=sys.stderr, flush=True))
        self._watched: list[Supervised] = []
        self._deaths: dict[int, list[float]] = {}
        self._due: dict[int, float] = {}
        self._stopping = False

    def add(self, child: Child) -> Child:
        self.children.append(child)
        self._watched.append(child)
        return child.start()

    def keep_alive(self, service: Supervised) -> None:
        """Restart ``service`` (already started) when it dies, but leave stopping it to the
        caller (the embedded Redis outlives the processes that use it)."""
        self._watched.append(service)

    def request_stop(self, *_: object) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def watch(self, interval: float = 0.2) -> Supervised | None:
        """Block until a stop is requested (None) or a child keeps dying (that child, given
        up on); children that die meanwhile are restarted with backoff."""
        while not self._stopping:
            for item in self._watched:
                if not item.alive and self._revive(item):
                    return item
            time.sleep(interval)
        return None

    def _revive(self, item: Supervised) -> bool:
        """Restart ``item`` when its delay is up; True if it has died too often."""
        key, now = id(item), time.monotonic()
        due = self._due.get(key)
        if due is None:
            window = self.policy.window
            deaths = [t for t in self._deaths.get(key, []) if now - t < window] + [now]
            self._deaths[key] = deaths
            if len(deaths) >= self.policy.max_failures:
                return True
            delay = self.policy.delay(len(deaths))
            self.say(f"{item.describe_exit()}; restarting it in {delay:g} s")
            self._due[key] = now + delay
        elif now >= due:
            del self._due[key]
            item.kill_group(signal.SIGKILL)  # what it left behind (pool processes)
            try:
                item.start()
            except Exception as exc:  # noqa: BLE001 - counted as one more death
                self.say(f"{item.name} did not start again: {exc}")
        return False

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every child at once (they shut down in parallel), SIGKILL what is left after
        ``timeout`` seconds."""
        for child in reversed(self.children):
            child.send(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            child.stop(max(0.1, deadline - time.monotonic()), signalled=True)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self.request_stop)
