"""End to end with a real `manage.py qcluster`: adding a stream on the page starts the
delivery loop in the worker, which sends what is recorded next to a real receiver
within seconds, signed; the worker's loop holds the stream's lease while it runs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.urls import reverse
from django_q.conf import Conf

from audit.models import Stream

from ..conftest import database_url, record
from .conftest import verified

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def qcluster(tmp_path, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", False)  # this process enqueues; the worker runs
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "Q_SYNC": "false",
        "Q_WORKERS": "2",
        "STREAM_ALLOW_PRIVATE_HOSTS": "true",
        "STREAM_LOOP_SECONDS": "20",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log = open(tmp_path / "qcluster.log", "w+b")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield worker, log
    worker.send_signal(signal.SIGTERM)  # the main PID only: a group signal hangs qcluster
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    log.close()


def wait_for(predicate, worker, log, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker.poll() is not None:
            break
        time.sleep(0.1)
    log.seek(0)
    pytest.fail("the worker did not deliver:\n" + log.read().decode()[-3000:])


def test_a_real_worker_delivers_what_is_recorded_within_seconds(
    client, org, admin, receiver, qcluster
):
    worker, log = qcluster
    client.force_login(admin)
    response = client.post(
        reverse("audit:stream-add", args=[org.pk]), {"name": "SIEM", "url": receiver.url}
    )
    assert response.status_code == 302
    stream = Stream.objects.get()
    secret = client.get(response["Location"]).context["secret"]
    wait_for(lambda: receiver.accepted_ids(own=True), worker, log)  # "added stream"
    assert Stream.objects.get().lease_owner, "the worker's loop holds the lease"

    started = time.monotonic()
    ids = [record(org).pk for _ in range(5)]
    wait_for(lambda: set(ids) <= set(receiver.accepted_ids()), worker, log, timeout=15)
    assert time.monotonic() - started < 5, "delivered within seconds, not at the next minute"
    assert receiver.accepted_ids() == ids
    assert all(verified(r, secret) for r in receiver.requests)
    stream.refresh_from_db()
    assert stream.health == "healthy" and stream.last_success_at is not None
