"""Serve the app with gunicorn and the django-q2 worker together; Ctrl-C stops both.

The worker runs in its own session so the terminal's Ctrl-C (sent to the whole
foreground process group) does not reach its children: qcluster hangs when every
process of its group is signalled at once. It gets one SIGTERM to its main PID.

A worker that dies is started again after 1 s, 2 s, 4 s ... (at most a minute; back
to 1 s once one has stayed up a minute), and the web goes on serving meanwhile. What
a dead worker leaves of its process group (qcluster's sentinel and workers survive
their parent) is killed first, so two clusters never run at once. If gunicorn dies,
everything stops."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from audit.demo import ADMIN_EMAIL, DEMO_PASSWORD, STAFF_EMAIL

RESTART_DELAY_MAX = 60
# A worker that stayed up this long (seconds) before it died restarts after 1 s again.
STABLE_AFTER = 60


class Command(BaseCommand):
    help = "Run gunicorn and qcluster together (what `make run` does)."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.getenv("BIND", "127.0.0.1:8000"))
        parser.add_argument("--workers", type=int, default=int(os.getenv("WEB_WORKERS", "2")))

    def start(self, kind: str, command: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)
        self.stderr.write(f"serve: {kind} started (pid {proc.pid})")
        return proc

    def worker_start(self) -> subprocess.Popen:
        return self.start("worker", [sys.executable, "manage.py", "qcluster"])

    def worker_died(self, worker: subprocess.Popen, delay: int) -> None:
        _leftovers_kill(worker)
        code = worker.wait()
        self.stderr.write(
            f"serve: worker (pid {worker.pid}) exited with code {code}; restarting in {delay} s"
        )

    def handle(self, *args, bind: str, workers: int, **options):
        bin_dir = os.path.dirname(sys.executable)
        worker: subprocess.Popen | None = self.worker_start()
        # The demo stream's receiver (audit/demo.py): prints what Acme Labs streams.
        receiver = self.start("stream receiver", [sys.executable, "manage.py", "stream_receiver"])
        gunicorn = os.path.join(bin_dir, "gunicorn")
        web = self.start(
            "web",
            [gunicorn, "auditlog_site.wsgi", "--bind", bind, "--workers", str(workers)]
            + ["--access-logfile", "-"],
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"\nAudit log: http://{bind}/\n"
                f"  org admin:   {ADMIN_EMAIL} / {DEMO_PASSWORD}\n"
                f"  Django admin http://{bind}/staff/ as {STAFF_EMAIL} / {DEMO_PASSWORD}\n"
                "Press Ctrl-C to stop the web server, the worker and the stream receiver.\n"
            )
        )
        stopping, signalled = False, set()

        def stop(*_):
            nonlocal stopping
            stopping = True
            for proc in (web, worker, receiver):
                # One SIGTERM each, however many times Ctrl-C is pressed.
                if proc is not None and proc.pid not in signalled and proc.poll() is None:
                    signalled.add(proc.pid)
                    proc.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        delay, started, restart_at = 1, time.monotonic(), 0.0
        try:
            while not stopping and web.poll() is None:
                if worker is not None and _exited(worker):
                    delay = 1 if time.monotonic() - started >= STABLE_AFTER else delay
                    self.worker_died(worker, delay)
                    worker, restart_at = None, time.monotonic() + delay
                    delay = min(delay * 2, RESTART_DELAY_MAX)
                if worker is None and not stopping and time.monotonic() >= restart_at:
                    worker, started = self.worker_start(), time.monotonic()
                try:
                    web.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            stop()
            for proc in (web, worker, receiver):
                if proc is None:
                    continue
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                _leftovers_kill(proc)
        if not stopping:
            self.stderr.write(f"serve: web (pid {web.pid}) exited with code {web.returncode}")
            sys.exit(1)


def _exited(proc: subprocess.Popen) -> bool:
    """Whether `proc` has exited, leaving it unreaped (a zombie) so its pid, which
    names its process group, cannot be reused before _leftovers_kill."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return proc.poll() is not None


def _leftovers_kill(proc: subprocess.Popen) -> None:
    """SIGKILL to what is left of a dead process's group (it led its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
