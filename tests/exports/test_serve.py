"""`manage.py serve` as a real process: gunicorn and qcluster on a migrated temporary
SQLite database. A worker that dies is started again and the web keeps answering;
SIGTERM stops everything. (Here beside the export tests: the worker is what builds
exports.)"""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def wait_until(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except OSError:
        return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def processes_in_sessions(sessions: set[int]) -> list[str]:
    """Live processes whose session is one of `sessions` (from /proc, no psutil)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        state, session = fields[0], int(fields[3])
        if session in sessions and state != "Z":
            found.append(stat.parent.name)
    return found


@pytest.fixture
def site_env(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "VAR_DIR": str(tmp_path / "var"),
        "Q_SYNC": "false",
        "Q_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
        # Stopping waits for the worker's long-running loops to end their turn.
        "AUDIT_SEAL_LOOP_SECONDS": "3",
        "STREAM_LOOP_SECONDS": "3",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=180,
    )
    return env


def test_serve_restarts_a_dead_worker_and_keeps_serving(site_env, tmp_path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=site_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/accounts/login/"

    def started(kind: str) -> list[int]:
        return [int(p) for p in re.findall(rf"{kind} started \(pid (\d+)\)", log_path.read_text())]

    try:
        wait_until(lambda: http_status(url) == 200, 60, "the web server", log_path)
        (web_pid,) = started("web")
        (first,) = wait_until(lambda: started("worker"), 30, "the worker", log_path)
        assert alive(first)

        os.kill(first, signal.SIGKILL)  # the worker dies
        restarted = wait_until(lambda: started("worker")[1:], 30, "a new worker", log_path)
        second = restarted[0]
        assert second != first and alive(second)
        assert re.search(
            rf"worker \(pid {first}\) exited with code -9; restarting in 1 s", log_path.read_text()
        )
        time.sleep(1)
        assert alive(second) and serve.poll() is None
        assert http_status(url) == 200
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
            code = None
        log.close()

    assert code == 0, log_path.read_text()[-3000:]
    sessions = {serve.pid, web_pid, *started("worker")}
    wait_until(lambda: not processes_in_sessions(sessions), 10, "everything to stop", log_path)


def test_serve_with_the_simulator_feeds_the_demo_through_the_ingest_endpoint(site_env, tmp_path):
    """What `make run` starts: the product simulator pushes over HTTP to the web server
    and new events land in the log, every second or two."""
    subprocess.run(
        [sys.executable, "manage.py", "seed_demo", "--events", "50"],
        cwd=ROOT,
        env=site_env,
        check=True,
        timeout=180,
        capture_output=True,
    )
    database = sqlite3.connect(tmp_path / "serve.sqlite3")

    def ingested() -> int:
        return database.execute("SELECT count(*) FROM audit_ingestedevent").fetchone()[0]

    port = free_port()
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--bind", f"127.0.0.1:{port}", "--demo"],
        cwd=ROOT,
        env=site_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: ingested() > 0, 60, "the simulator's first events", log_path)
        first = ingested()
        wait_until(lambda: ingested() > first, 10, "more events a few seconds later", log_path)
        assert re.search(r"Acme Corporation · \w.* recorded", log_path.read_text())
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
            code = None
        log.close()
        database.close()
    assert code == 0, log_path.read_text()[-3000:]
    assert "Traceback" not in log_path.read_text()
