"""A real Prefect server for tests: ``prefect server start`` on 127.0.0.1 with its own home.

    with prefect_server() as server:
        server.cli("work-pool", "create", "dub-film-local", "--type", "process")
        worker = server.start_worker("dub-film-local", extra_env={"DUB_FILM_HOME": str(ROOT)})
        ...

The server gets a temporary PREFECT_HOME with its own SQLite database, analytics off,
and runs its loop services (event persister, triggers, actions, scheduler...), as the
default ``prefect server start`` does.  Child processes (the ``prefect`` CLI, workers)
get ``server.env``: the same home and ``PREFECT_API_URL`` pointing at this server, and
none of the caller's other ``PREFECT_*`` settings.  On exit the workers and the server
are terminated (their whole process groups) and the home is removed.  Every process
logs to a file in the home; a failed startup raises with the server log's tail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))
STARTUP_TIMEOUT_S = 120.0


class ServerError(RuntimeError):
    """The server (or a process started beside it) did not start or misbehaved."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, chars: int = 6000) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return text[-chars:]


def _clean_env(base: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any PREFECT_* setting (profiles, API URL, keys, home)."""
    return {k: v for k, v in base.items() if not k.startswith("PREFECT_")}


def _terminate(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group this test started (``start_new_session``), then SIGKILL it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
    # The group may outlive its leader (a worker's flow-run subprocess): kill what is left.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen
    children: list[tuple[subprocess.Popen, Path]] = field(default_factory=list)

    # -- the CLI ---------------------------------------------------------------------

    def cli(self, *args: str, cwd: Path = ROOT, timeout: float = 180, check: bool = True,
            extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``prefect ARGS`` against this server; ``check`` raises with its output on failure."""
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run([PREFECT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise ServerError(
                f"`prefect {' '.join(args)}` exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                f"\n--- stderr\n{proc.stderr[-4000:]}\n--- server log\n{self.log_tail(3000)}"
            )
        return proc

    def cli_parallel(self, *commands: Sequence[str], cwd: Path = ROOT, timeout: float = 180) -> list[subprocess.CompletedProcess]:
        """Several independent ``prefect`` commands at once (each CLI start costs seconds); all must succeed."""
        procs = [subprocess.Popen([PREFECT, *args], cwd=cwd, env=self.env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for args in commands]
        done = []
        for args, proc in zip(commands, procs):
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess([PREFECT, *args], proc.returncode, out, err))
        for cp in done:
            if cp.returncode != 0:
                raise ServerError(f"`{' '.join(cp.args[1:])}` exited {cp.returncode}\n--- stdout\n{cp.stdout[-4000:]}"
                                  f"\n--- stderr\n{cp.stderr[-4000:]}\n--- server log\n{self.log_tail(3000)}")
        return done

    # -- processes beside the server -------------------------------------------------

    def spawn(self, args: Sequence[str], name: str, *, cwd: Path = ROOT,
              extra_env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running process with this server's env; it is terminated on exit."""
        log = self.home / f"{name}.log"
        env = {**self.env, **(extra_env or {})}
        with open(log, "ab") as fh:
            proc = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.children.append((proc, log))
        return proc

    def start_worker(self, pool: str, *, cwd: Path = ROOT, extra_env: Mapping[str, str] | None = None,
                     name: str | None = None, args: Sequence[str] = ()) -> subprocess.Popen:
        """``prefect worker start --pool POOL`` as a subprocess; its log is ``worker-POOL.log``."""
        return self.spawn([PREFECT, "worker", "start", "--pool", pool, *args], name or f"worker-{pool}",
                          cwd=cwd, extra_env=extra_env)

    def child_log(self, proc: subprocess.Popen, chars: int = 6000) -> str:
        for p, log in self.children:
            if p is proc:
                return tail(log, chars)
        return "(not a child of this server)"

    def log_tail(self, chars: int = 6000) -> str:
        return tail(self.log_path, chars)

    # -- the API ---------------------------------------------------------------------

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point this (test) process's Prefect client at the server, e.g. around ``get_client()``."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
            yield

    def request(self, method: str, route: str, body: Any = None, timeout: float = 30) -> Any:
        """A plain JSON request to ``{api_url}{route}`` (stdlib only); returns the decoded JSON or None."""
        import json

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + route, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.api_url + "/health", timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    # -- teardown --------------------------------------------------------------------

    def stop(self) -> None:
        for proc, _ in reversed(self.children):
            _terminate(proc)
        self.children.clear()
        _terminate(self.process, grace_s=15)


def _start(home: Path, port: int, ui: bool, extra_env: Mapping[str, str] | None) -> PrefectServer:
    api_url = f"http://127.0.0.1:{port}/api"
    settings = {
        "PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_CLI_WRAP_LINES": "false",
        "PREFECT_CLI_COLORS": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    base = _clean_env(os.environ)
    server_env = {**base, **settings}
    env = {**base, **settings, "PREFECT_API_URL": api_url}
    log_path = home / "server.log"
    with open(log_path, "ab") as fh:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home, env=server_env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = PrefectServer(api_url=api_url, home=home, env=env, log_path=log_path, process=proc)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"prefect server exited {proc.returncode} during startup\n--- {log_path}\n{tail(log_path)}")
        if server.healthy():
            return server
        time.sleep(0.5)
    server.stop()
    raise ServerError(f"prefect server not healthy after {STARTUP_TIMEOUT_S:.0f} s at {api_url}\n--- {log_path}\n{tail(log_path)}")


@contextlib.contextmanager
def prefect_server(*, ui: bool = False, extra_env: Mapping[str, str] | None = None,
                   keep_home: bool = False) -> Iterator[PrefectServer]:
    """A real Prefect server on a free 127.0.0.1 port; see the module docstring.

    ``extra_env`` adds settings for the server and every child; ``keep_home`` leaves the
    home (database and logs) behind for post-mortems."""
    home = Path(tempfile.mkdtemp(prefix="dub-film-prefect-server-"))
    server = None
    try:
        for attempt in range(2):  # a port taken between free_port() and bind: try another one
            try:
                server = _start(home, free_port(), ui, extra_env)
                break
            except ServerError as exc:
                if attempt == 0 and "address already in use" in str(exc).lower():
                    continue
                raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
        if keep_home:
            print(f"prefect server home kept at {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)
