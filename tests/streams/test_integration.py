"""End to end with a real `manage.py qcluster`: adding a stream on the page starts the
delivery loop in the worker, which sends what is recorded next to a real receiver
within seconds, signed; the worker's loop holds the stream's lease while it runs."""

import time

import pytest
from django.urls import reverse
from django_q.conf import Conf

from audit.models import Stream

from ..conftest import qcluster_running, record, worker_wait_for
from .conftest import verified

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def qcluster(tmp_path, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", False)  # this process enqueues; the worker runs
    with qcluster_running(
        tmp_path,
        Q_WORKERS="2",
        STREAM_ALLOW_PRIVATE_HOSTS="true",
    ) as running:
        yield running


def wait_for(predicate, worker, log, timeout: float = 60.0):
    worker_wait_for(predicate, worker, log, what="deliver", timeout=timeout)


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
