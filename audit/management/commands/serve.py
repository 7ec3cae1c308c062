"""Serve the app with gunicorn and the django-q2 worker together; Ctrl-C stops both.

The worker runs in its own session so the terminal's Ctrl-C (sent to the whole
foreground process group) does not reach its children: qcluster hangs when every
process of its group is signalled at once. It gets one SIGTERM to its main PID."""

import os
import signal
import subprocess
import sys

from django.conf import settings
from django.core.management.base import BaseCommand

from audit.demo import ADMIN_EMAIL, DEMO_PASSWORD, STAFF_EMAIL


class Command(BaseCommand):
    help = "Run gunicorn and qcluster together (what `make run` does)."

    def add_arguments(self, parser):
        parser.add_argument("--bind", default=os.getenv("BIND", "127.0.0.1:8000"))
        parser.add_argument("--workers", type=int, default=int(os.getenv("WEB_WORKERS", "2")))

    def handle(self, *args, bind: str, workers: int, **options):
        bin_dir = os.path.dirname(sys.executable)
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            start_new_session=True,
        )
        web = subprocess.Popen(
            [
                os.path.join(bin_dir, "gunicorn"),
                "auditlog_site.wsgi",
                "--bind",
                bind,
                "--workers",
                str(workers),
                "--access-logfile",
                "-",
            ],
            cwd=settings.BASE_DIR,
            start_new_session=True,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"\nAudit log: http://{bind}/\n"
                f"  org admin:   {ADMIN_EMAIL} / {DEMO_PASSWORD}\n"
                f"  Django admin http://{bind}/admin/ as {STAFF_EMAIL} / {DEMO_PASSWORD}\n"
                "Press Ctrl-C to stop the web server and the worker.\n"
            )
        )

        def stop(*_):
            for proc in (web, worker):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            while web.poll() is None and worker.poll() is None:
                try:
                    web.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            stop()
            for proc in (web, worker):
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
