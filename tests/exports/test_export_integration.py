"""End to end with real processes: the page enqueues the job, a real `manage.py qcluster`
builds the file against the test database and mails a real SMTP server (aiosmtpd on
127.0.0.1); the link in the received message downloads the CSV."""

import os
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django_q.conf import Conf

from audit.models import Event
from exports.models import ExportRequest

from ..conftest import qcluster_running, redis_broker, worker_wait_for
from .conftest import full_spec, parse_csv, record_many

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


# The Redis broker's database here; the queue is emptied before each test.
QUEUE_REDIS_URL = os.getenv("TEST_Q_REDIS_URL", "redis://127.0.0.1:6379/7")


@pytest.fixture(params=["orm"])
def qcluster(request, smtp_inbox, tmp_path, settings, monkeypatch):
    """A real worker with the shipped Q_CLUSTER settings, pointed at the test database;
    on the ORM broker, or on Redis when parametrized so (Q_REDIS_URL)."""
    _, port = smtp_inbox
    settings.SITE_URL = "http://testserver"
    settings.PRIVATE_STORAGE_DIR = tmp_path / "private"
    monkeypatch.setattr(Conf, "SYNC", False)  # this process enqueues; the worker runs
    broker = redis_broker(monkeypatch, QUEUE_REDIS_URL) if request.param == "redis" else {}
    with qcluster_running(
        tmp_path,
        Q_WORKERS="1",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(port),
        SITE_URL=settings.SITE_URL,
        PRIVATE_STORAGE_DIR=str(settings.PRIVATE_STORAGE_DIR),
        **broker,
    ) as running:
        yield running


def wait_for(predicate, worker, log, timeout: float = 90.0):
    worker_wait_for(predicate, worker, log, what="finish the export", timeout=timeout)


@pytest.mark.parametrize("qcluster", ["orm", "redis"], indirect=True)
def test_a_real_worker_builds_the_export_and_emails_a_working_link(
    org, admin, jira, client, smtp_inbox, qcluster
):
    inbox, _ = smtp_inbox
    worker, log = qcluster
    now = timezone.now()
    ids = record_many(
        org,
        [full_spec(admin, ago=timedelta(minutes=m), now=now, product=jira) for m in range(1, 26)],
    )
    client.force_login(admin)
    response = client.post(
        reverse("exports:export-create", args=[org.pk]),
        {"range": "24h", "action": "group_member_added"},
    )
    assert response.status_code == 302
    export = ExportRequest.objects.get()

    wait_for(lambda: inbox.messages, worker, log)
    export.refresh_from_db()
    assert export.status == "ready" and export.row_count == 25 and export.attempts == 1

    (message,) = inbox.messages
    assert message["Subject"] == "Your audit log is ready to download"
    assert message["To"] == "alice@acme.test"
    body = message.get_body(("plain",)).get_content()
    assert "Acme" in body and "25 activities" in body and "Last 24 hours" in body
    assert "Activity: Added user to group" in body
    link = re.search(r"Download audit log: (\S+)", body).group(1)
    path = reverse("exports:export-download", args=[org.pk, export.pk])
    assert link == f"http://testserver{path}"
    html = message.get_body(("html",)).get_content()
    assert f'href="{link}"' in html

    download = client.get(link.removeprefix("http://testserver"))
    assert download.status_code == 200
    rows = parse_csv(b"".join(download.streaming_content))
    assert [int(r["Event ID"]) for r in rows] == ids
    assert {r["Actor email"] for r in rows} == {"alice@acme.test"}
    assert Event.objects.filter(action__key="audit_log_exported").count() == 1


def test_a_real_worker_builds_an_export_whose_task_was_lost_once_it_is_requeued(
    org, admin, smtp_inbox, qcluster
):
    from django_q.models import OrmQ

    from exports.services import export_filter, exports_lost_requeue

    inbox, _ = smtp_inbox
    worker, log = qcluster
    record_many(org, [full_spec(admin, ago=timedelta(minutes=1), now=timezone.now())])
    event_filter = export_filter(organization=org, user=admin, filters={"range": "24h"})
    assert event_filter.is_valid()
    # Saved, but its task never reached the queue (or the queue row was lost since).
    export = ExportRequest.objects.create(
        organization=org,
        requested_by=admin,
        filters=event_filter.params(),
        filters_summary=event_filter.summary(),
        enqueued_at=timezone.now() - timedelta(minutes=6),
    )
    assert not OrmQ.objects.exists()
    assert exports_lost_requeue() == 1

    wait_for(lambda: inbox.messages, worker, log)
    export.refresh_from_db()
    assert export.status == "ready" and export.row_count == 1 and export.requeues == 1
    assert [m["Subject"] for m in inbox.messages] == ["Your audit log is ready to download"]
    assert exports_lost_requeue() == 0
