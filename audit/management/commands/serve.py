"""Serve the app with gunicorn and the django-q2 worker together (and, with --demo, the
demo's product simulator and stream receiver); Ctrl-C stops them all.

The worker runs in its own session so the terminal's Ctrl-C (sent to the whole
foreground process group) does not reach its children: qcluster hangs when every
process of its group is signalled at once. It gets one SIGTERM to its main PID.

A worker (or a demo companion) that dies is started again after 1 s, 2 s, 4 s ... (at most
a minute; back to 1 s once one has stayed up a minute), and the web goes on serving. What
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


class Companion:
    """A process that runs beside the web server (the worker; in the demo, the product
    simulator and the stream receiver), started again with back-off when it dies."""

    def __init__(self, serve: "Command", kind: str, command: list[str]):
        self.serve, self.kind, self.command = serve, kind, command
        self.proc: subprocess.Popen | None = None
        self.delay, self.started, self.restart_at = 1, 0.0, 0.0

    def start(self) -> None:
        self.proc, self.started = self.serve.start(self.kind, self.command), time.monotonic()

    def watch(self, stopping: bool) -> None:
        """Notices a death and restarts when its back-off has passed."""
        if self.proc is not None and _exited(self.proc):
            if time.monotonic() - self.started >= STABLE_AFTER:
                self.delay = 1
            _leftovers_kill(self.proc)
            code = self.proc.wait()
            self.serve.stderr.write(
                f"serve: {self.kind} (pid {self.proc.pid}) exited with code {code}; "
                f"restarting in {self.delay} s"
            )
            self.proc, self.restart_at = None, time.monotonic() + self.delay
            self.delay = min(self.delay * 2, RESTART_DELAY_MAX)
        if self.proc is None and not stopping and time.monotonic() >= self.restart_at:
            self.start()


class Command(BaseCommand):
    help = "Run gunicorn and qcluster together (what `make run` does)."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.getenv("BIND", "127.0.0.1:8000"))
        parser.add_argument("--workers", type=int, default=int(os.getenv("WEB_WORKERS", "2")))
        parser.add_argument(
            "--demo",
            action="store_true",
            help="also run the demo's product simulator (simulate_products) and stream "
            "receiver (stream_receiver), as make run does",
        )

    def start(self, kind: str, command: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(command, cwd=settings.BASE_DIR, start_new_session=True)
        self.stderr.write(f"serve: {kind} started (pid {proc.pid})")
        return proc

    def handle(self, *args, bind: str, workers: int, demo: bool, **options):
        bin_dir = os.path.dirname(sys.executable)
        manage = [sys.executable, "manage.py"]
        companions = [Companion(self, "worker", [*manage, "qcluster"])]
        if demo:
            host, _, port = bind.rpartition(":")
            url = f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"  # noqa: S104
            companions += [
                Companion(self, "simulator", [*manage, "simulate_products", "--url", url]),
                # The demo stream's receiver (audit/demo.py): prints what Acme Labs streams.
                Companion(self, "stream receiver", [*manage, "stream_receiver"]),
            ]
        for companion in companions:
            companion.start()
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
                "Press Ctrl-C to stop them all.\n"
            )
        )
        stopping, signalled = False, set()

        def running() -> list[subprocess.Popen]:
            return [web] + [c.proc for c in companions if c.proc is not None]

        def stop(*_):
            nonlocal stopping
            stopping = True
            for proc in running():
                # One SIGTERM each, however many times Ctrl-C is pressed.
                if proc.pid not in signalled and proc.poll() is None:
                    signalled.add(proc.pid)
                    proc.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while not stopping and web.poll() is None:
                for companion in companions:
                    companion.watch(stopping)
                try:
                    web.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            stop()
            for proc in running():
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
