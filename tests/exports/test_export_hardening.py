"""Exports under failure: a claim that lapses, a task row that is lost, an email that is
refused, two databases sharing one VAR_DIR, and an admin asking for too many at once."""

import email
from datetime import timedelta
from email.policy import default as default_policy

import pytest
from django.core import mail
from django.urls import reverse
from django_q.conf import Conf
from django_q.models import OrmQ

from audit.models import Event
from exports import services
from exports.models import ExportRequest
from exports.services import (
    ExportLimitReached,
    export_claim,
    export_file_build,
    export_request_create,
    exports_stalled_fail,
    manifest_path,
)
from exports.tasks import exports_stalled
from tests.conftest import free_port, in_threads, make_user, redis_broker

from .conftest import record_many, spec
from .test_export_build import WorkerDied, export_for
from .test_export_integration import QUEUE_REDIS_URL

LEASE = 60


@pytest.fixture(autouse=True)
def lease(settings):
    settings.EXPORT_LEASE = LEASE
    settings.EXPORT_MAX_CONCURRENT = 3


@pytest.fixture
def broker(monkeypatch):
    """async_task writes a real ORM-broker row (no worker runs it) instead of running
    the task in-process."""
    monkeypatch.setattr(Conf, "SYNC", False)
    return OrmQ.objects


def queued_names() -> list[str]:
    return [row.name() for row in OrmQ.objects.all()]


# 1. The claim is a lease.


def test_a_second_claim_waits_until_the_lease_has_lapsed(org, admin, clock):
    export = export_for(org, admin)
    first = export_claim(export_id=export.pk)
    assert first is not None
    clock.advance(seconds=LEASE - 1)
    assert export_claim(export_id=export.pk) is None
    clock.advance(seconds=2)
    second = export_claim(export_id=export.pk)
    assert second is not None and second != first
    assert ExportRequest.objects.get(pk=export.pk).attempts == 2


def test_a_retry_while_the_builder_streams_does_not_build_again(org, admin, clock, monkeypatch):
    record_many(org, [spec(ago=timedelta(minutes=m)) for m in range(1, 4)])
    export = export_for(org, admin)
    real_write = services.csv_rows_write
    retry = {}

    def slow_write(out, events, *, limit):
        # The builder streams for 2.5 leases, renewing as it writes; a retry that
        # django-q2 starts meanwhile (its retry shorter than the build) finds it alive.
        for _ in range(5):
            clock.advance(seconds=LEASE // 2)
            out.write("")
        retry["export"] = export_file_build(export_id=export.pk)
        return real_write(out, events, limit=limit)

    monkeypatch.setattr(services, "csv_rows_write", slow_write)
    export = export_file_build(export_id=export.pk)
    assert retry["export"].status == "running"
    assert export.status == "ready" and export.row_count == 3 and export.attempts == 1
    assert len(mail.outbox) == 1
    assert Event.objects.filter(action__key="audit_log_exported").count() == 1


def test_a_builder_that_lost_its_lease_stops_without_writing(
    org, admin, clock, monkeypatch, private_storage
):
    record_many(org, [spec(ago=timedelta(minutes=m)) for m in range(1, 4)])
    export = export_for(org, admin)
    real_write = services.csv_rows_write
    calls = []

    def stalls_then_resumes(out, events, *, limit):
        calls.append(1)
        if len(calls) == 1:  # the first builder hangs past its lease; a retry takes over
            clock.advance(seconds=LEASE + 1)
            taken_over = export_file_build(export_id=export.pk)
            assert taken_over.status == "ready"
            return real_write(out, events, limit=1)  # then it wakes up and carries on
        return real_write(out, events, limit=limit)

    monkeypatch.setattr(services, "csv_rows_write", stalls_then_resumes)
    export_file_build(export_id=export.pk)
    export = ExportRequest.objects.get(pk=export.pk)
    assert export.status == "ready" and export.row_count == 3 and export.attempts == 2
    files = sorted(p for p in private_storage.rglob("*") if p.is_file())
    assert files == [export.file_path, manifest_path(export.file_path)]
    assert len(export.file_path.read_bytes().splitlines()) == 4  # the winner's 3 rows
    assert len(mail.outbox) == 1
    assert Event.objects.filter(action__key="audit_log_exported").count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_workers_at_once_claim_it_once(org, admin, broker):
    record_many(org, [spec(ago=timedelta(minutes=1))])
    export = export_for(org, admin)
    results = in_threads(lambda: export_file_build(export_id=export.pk).status, count=2)
    assert sorted(results) in (["ready", "ready"], ["ready", "running"])
    export.refresh_from_db()
    assert export.status == "ready" and export.attempts == 1
    assert len(mail.outbox) == 1
    assert Event.objects.filter(action__key="audit_log_exported").count() == 1


# 2. A queued export whose task was lost is enqueued again, then failed.


def test_a_queued_export_whose_task_was_lost_is_enqueued_again(
    org, admin, clock, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        export = export_for(org, admin)
    assert queued_names() == [f"export-{export.pk}"]
    clock.advance(minutes=10)
    assert exports_stalled_fail() == 0  # its task is still waiting: nothing to do
    assert broker.count() == 1
    export.refresh_from_db()
    assert export.requeues == 0


def test_a_lost_task_is_enqueued_again_after_a_few_minutes(
    org, admin, clock, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        export = export_for(org, admin)
    broker.all().delete()  # the queue row is lost (broker wiped, worker restarted)
    clock.advance(minutes=1)
    exports_stalled()
    assert broker.count() == 0  # too soon to call it lost
    clock.advance(minutes=5)
    exports_stalled()
    assert queued_names() == [f"export-{export.pk}"]
    exports_stalled()
    assert broker.count() == 1  # not twice while that one is pending
    export.refresh_from_db()
    assert export.status == "queued" and export.requeues == 1


def test_a_reenqueued_export_is_built_and_mailed(org, admin, clock):
    record_many(org, [spec()])
    export = export_for(org, admin)  # on_commit never runs here: the task is lost
    clock.advance(minutes=6)
    exports_stalled()  # Q_SYNC under pytest: the re-enqueued task runs at once
    export.refresh_from_db()
    assert export.status == "ready" and export.row_count == 1
    assert [m.subject for m in mail.outbox] == ["Your audit log is ready to download"]


def test_a_queued_export_lost_every_time_is_failed_and_told(org, admin, clock, broker):
    export = export_for(org, admin)
    for _ in range(10):
        broker.all().delete()
        clock.advance(minutes=6)
        exports_stalled()
    export.refresh_from_db()
    assert export.status == "failed" and export.error == "The export did not start."
    assert export.requeues == settings_max_attempts()
    assert [m.subject for m in mail.outbox] == ["Your audit log export failed"]


def settings_max_attempts() -> int:
    from django.conf import settings

    return settings.Q_CLUSTER["max_attempts"]


def test_on_redis_a_running_export_whose_builder_died_is_built_again(
    org, admin, clock, monkeypatch
):
    """Redis forgets a task once a worker has taken it: a build whose worker was killed
    is put back on the queue once its lease has lapsed, and the next worker builds it."""
    from django_q.brokers import get_broker
    from django_q.signing import SignedPackage

    from exports.tasks import export_build

    monkeypatch.setattr(Conf, "SYNC", False)
    redis_broker(monkeypatch, QUEUE_REDIS_URL)
    record_many(org, [spec(ago=timedelta(minutes=1))])
    export = export_for(org, admin)  # its task (on commit) was taken by the worker ...
    assert export_claim(export_id=export.pk)  # ... which claimed it, then died
    clock.advance(seconds=LEASE - 1)
    assert exports_stalled()["rebuilt"] == 0  # its lease may still be renewed
    clock.advance(seconds=2)
    assert exports_stalled()["rebuilt"] == 1
    assert exports_stalled()["rebuilt"] == 0  # not again while that one waits
    queue = get_broker()
    ((ack, raw),) = queue.dequeue()
    task = SignedPackage.loads(raw)
    assert task["name"] == f"export-{export.pk}"
    assert export_build(*task["args"]) == "ready"  # what the next worker runs
    export.refresh_from_db()
    assert export.row_count == 1 and export.attempts == 2 and export.requeues == 1
    assert [m.subject for m in mail.outbox] == ["Your audit log is ready to download"]
    assert exports_stalled() == {"requeued": 0, "rebuilt": 0, "failed": 0, "emails": 0}


# 3. The email is marked sent only once it has been sent.


class Refusing:
    """An SMTP server that refuses the message while `refuse` is set."""

    def __init__(self):
        self.refuse = True
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        if self.refuse:
            return "554 Transaction failed: try later"
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))
        return "250 OK"


@pytest.fixture
def smtp(settings):
    from aiosmtpd.controller import Controller

    handler = Refusing()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    yield handler
    controller.stop()


def test_a_refused_email_is_sent_by_the_next_sweep(org, admin, clock, smtp):
    import smtplib

    record_many(org, [spec()])
    export = export_for(org, admin)
    with pytest.raises(smtplib.SMTPException):
        export_file_build(export_id=export.pk)
    export.refresh_from_db()
    assert export.status == "ready" and export.email_sent_at is None
    assert smtp.messages == []

    smtp.refuse = False
    clock.advance(minutes=6)
    exports_stalled()
    exports_stalled()
    export_file_build(export_id=export.pk)
    (message,) = smtp.messages
    assert message["Subject"] == "Your audit log is ready to download"
    assert ExportRequest.objects.get(pk=export.pk).email_sent_at == clock.now


def test_an_email_whose_sender_died_is_sent_once_its_claim_lapses(org, admin, clock, monkeypatch):
    record_many(org, [spec()])
    export = export_for(org, admin)

    def killed(self, *args, **kwargs):
        raise WorkerDied

    with monkeypatch.context() as m:
        m.setattr("django.core.mail.EmailMessage.send", killed)
        with pytest.raises(WorkerDied):
            export_file_build(export_id=export.pk)
    assert ExportRequest.objects.get(pk=export.pk).email_sent_at is None
    exports_stalled()
    assert mail.outbox == []  # the dead sender's claim still holds
    clock.advance(minutes=11)
    exports_stalled()
    exports_stalled()
    assert len(mail.outbox) == 1


def test_an_address_that_always_refuses_is_given_up_on(org, admin, clock, smtp):
    export = export_for(org, admin)
    for _ in range(10):
        try:
            export_file_build(export_id=export.pk)
        except Exception:  # noqa: S110 - the task fails; the sweep carries on
            pass
        clock.advance(minutes=11)
        exports_stalled()
    export.refresh_from_db()
    assert export.email_sent_at is None and export.email_attempts == services.EMAIL_ATTEMPTS


# 4. Two databases sharing one VAR_DIR never share a file.


def test_two_databases_never_share_a_file_path(org, admin, clock, private_storage):
    record_many(org, [spec()])
    first = export_file_build(export_id=export_for(org, admin).pk)
    first_bytes = first.file_path.read_bytes()
    # Another database numbers its organizations and exports the same way: the same
    # (org id, export id) pair, a different export.
    ExportRequest.objects.filter(pk=first.pk).delete()
    record_many(org, [spec(ago=timedelta(minutes=5))])
    other = ExportRequest.objects.create(
        pk=first.pk, organization=org, requested_by=admin, filters=first.filters
    )
    other = export_file_build(export_id=other.pk)
    assert other.status == "ready" and other.row_count == 2
    assert other.file_path != first.file_path
    assert first.file_path.read_bytes() == first_bytes
    assert len([p for p in private_storage.rglob("*.csv") if p.is_file()]) == 2


# B. At most EXPORT_MAX_CONCURRENT exports in progress per admin.


def pending(org, user, count: int, status: str = "queued") -> None:
    for _ in range(count):
        ExportRequest.objects.create(organization=org, requested_by=user, status=status)


def test_an_admin_with_three_exports_in_progress_cannot_start_a_fourth(org, admin, client):
    pending(org, admin, 2)
    pending(org, admin, 1, status="running")
    pending(org, admin, 4, status="ready")
    client.force_login(admin)
    response = client.post(reverse("exports:export-create", args=[org.pk]), {}, follow=True)
    assert response.status_code == 200
    assert "You already have 3 exports in progress; wait for one to finish." in [
        str(m) for m in response.context["messages"]
    ]
    assert "We&#x27;ll email you" not in response.content.decode()
    assert ExportRequest.objects.count() == 7


def test_export_again_says_the_same(org, admin, client):
    pending(org, admin, 3)
    earlier = ExportRequest.objects.create(organization=org, requested_by=admin, status="failed")
    client.force_login(admin)
    response = client.post(reverse("exports:export-again", args=[org.pk, earlier.pk]), follow=True)
    assert response.status_code == 200
    assert "You already have 3 exports in progress" in response.content.decode()
    assert ExportRequest.objects.count() == 4


def test_the_limit_is_per_admin_and_finished_exports_free_a_slot(org, admin, client, settings):
    other = make_user("ann@acme.test", org, "admin")
    pending(org, other, 3)
    pending(org, admin, 2)
    client.force_login(admin)
    client.post(reverse("exports:export-create", args=[org.pk]), {})
    assert ExportRequest.objects.filter(requested_by=admin).count() == 3
    settings.EXPORT_MAX_CONCURRENT = 1
    ExportRequest.objects.filter(requested_by=admin).update(status="ready")
    client.post(reverse("exports:export-create", args=[org.pk]), {})
    assert ExportRequest.objects.filter(requested_by=admin).count() == 4


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_limit_holds_when_requests_race(org, admin, broker):
    pending(org, admin, 1)

    def request():
        try:
            export_request_create(
                organization=org, requested_by=admin, filters={}, filters_summary=[]
            )
            return "created"
        except ExportLimitReached as exc:
            return str(exc)

    results = in_threads(request, count=4)
    assert sorted(results).count("created") == 2
    assert ExportRequest.objects.filter(requested_by=admin).count() == 3
