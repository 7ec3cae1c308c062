"""The worker's side of an export: the CSV, the request row, the event, the email."""

import hashlib
from datetime import timedelta

import pytest
from django.core import mail

from audit.models import ActivitySetting, Event
from audit.services import Actor, item, user_item
from exports import services
from exports.models import ExportRequest
from exports.services import (
    CSV_HEADER,
    csv_cell,
    export_file_build,
    export_filter,
    export_request_create,
)
from tests.conftest import make_user

from .conftest import full_spec, parse_csv, record_many, spec


def export_for(org, user, data=None) -> ExportRequest:
    event_filter = export_filter(organization=org, user=user, filters=data or {})
    assert event_filter.is_valid(), event_filter.errors
    return export_request_create(
        organization=org,
        requested_by=user,
        filters=event_filter.params(),
        filters_summary=event_filter.summary(),
        ip="198.51.100.7",
        user_agent="Export UA",
    )


def build(org, user, data=None) -> ExportRequest:
    export = export_for(org, user, data)
    return export_file_build(export_id=export.pk)


def csv_of(export) -> list[dict]:
    return parse_csv(export.file_path.read_bytes())


def ids_of(rows) -> list[int]:
    return [int(r["Event ID"]) for r in rows]


def test_the_csv_parsed_back_equals_the_events(org, admin, jira, clock):
    ids = record_many(
        org, [full_spec(admin, ago=timedelta(minutes=m), product=jira) for m in (5, 9)]
    )
    export = build(org, admin)
    rows = csv_of(export)
    assert list(rows[0]) == list(CSV_HEADER)
    assert ids_of(rows) == ids  # recorded newest first
    event = Event.objects.select_related("action").get(pk=ids[0])
    assert rows[0] == {
        "Time (UTC)": event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Actor name": "Alice Admin",
        "Actor email": "alice@acme.test",
        "Activity": "Added user to group",
        "Activity key": "group_member_added",
        "Category": "Groups",
        "Product": "Jira",
        "Site": "acme.example.net",
        "Details": event.message,
        "Content": "",
        "IP address": "203.0.113.9",
        "Country": "Australia",
        "Region": "New South Wales",
        "City": "Sydney",
        "User agent": "Mozilla/5.0 (pytest)",
        "Event ID": str(event.pk),
    }
    assert event.message == "Alice Admin added Carol Jones to group engineering"


def test_the_request_records_filters_count_size_and_sha256(org, admin, clock):
    record_many(org, [spec(ago=timedelta(minutes=m)) for m in range(1, 4)])
    export = build(org, admin)
    data = export.file_path.read_bytes()
    assert export.status == "ready" and export.row_count == 3
    assert export.size_bytes == len(data)
    assert export.sha256 == hashlib.sha256(data).hexdigest()
    assert export.filters["range"] == "custom" and export.filters_summary == [
        "Last 7 days",
        "All activities",
    ]
    assert export.file_name == f"exports/{org.pk}/{export.file_key}.csv"
    assert export.finished_at == clock.now
    assert export.expires_at == clock.now + timedelta(days=1)


def test_content_is_exported_only_where_stored(org, admin, confluence, clock):
    page = [item("page", 1, "Q3 roadmap")]
    record_many(org, [spec("page_viewed", product=confluence, context=page)])
    ActivitySetting.objects.create(organization=org, product=confluence, content_stored=False)
    record_many(
        org, [spec("page_viewed", ago=timedelta(minutes=1), product=confluence, context=page)]
    )
    rows = csv_of(build(org, admin))
    assert [r["Content"] for r in rows] == ["", "Q3 roadmap"]


def test_no_filter_exports_the_default_window_of_every_activity(org, admin, clock):
    inside = record_many(org, [spec("group_created"), spec("user_logged_in")])
    record_many(org, [spec(ago=timedelta(days=8))])
    assert sorted(ids_of(csv_of(build(org, admin)))) == sorted(inside)


def test_it_honours_the_search(org, admin, clock):
    carol = make_user("carol@acme.test", org, name="Carol Jones")
    hit = record_many(org, [spec("group_member_added", context=[user_item(carol)])])
    record_many(org, [spec("group_member_added", context=[user_item(admin)])])
    export = build(org, admin, {"q": "CAROL@acme.test"})
    assert ids_of(csv_of(export)) == hit
    assert export.filters_summary[0] == "Search: carol@acme.test"


def test_it_honours_the_activity_filter(org, admin, clock):
    created = record_many(org, [spec("group_created"), spec("group_deleted")])
    export = build(org, admin, {"action": ["group_deleted"]})
    assert ids_of(csv_of(export)) == created[1:]
    assert "Activity: Deleted group" in export.filters_summary[-1]


def test_it_honours_the_date_range(org, admin, clock):
    old, _, recent = record_many(
        org,
        [spec(ago=timedelta(days=40)), spec(ago=timedelta(days=20)), spec(ago=timedelta(hours=2))],
    )
    assert ids_of(csv_of(build(org, admin, {"range": "24h"}))) == [recent]
    custom = build(org, admin, {"range": "custom", "from": "2026-10-01", "to": "2026-10-12"})
    assert ids_of(csv_of(custom)) == [old]


def test_it_never_exports_another_orgs_events(org, other_org, admin, clock):
    mine = record_many(org, [spec()])
    record_many(other_org, [spec()])
    assert ids_of(csv_of(build(org, admin))) == mine


def test_it_keeps_the_newest_10000_of_10001(org, admin, clock):
    ids = record_many(org, [spec(ago=timedelta(seconds=10 + i)) for i in range(10_001)])
    export = build(org, admin)
    exported = ids_of(csv_of(export))
    assert export.row_count == 10_000 == len(exported)
    assert exported == ids[:10_000]  # recorded newest first
    assert ids[-1] not in exported


def test_formula_cells_are_neutralized(org, admin, clock):
    dangerous = ["=HYPERLINK(1)", "+1+2", "-2+3", "@SUM(A1)", "\tTab", "\rCR"]
    for name in dangerous:
        actor = Actor("user", "1", name, "x@acme.test")
        record_many(org, [spec("user_logged_in", actor=actor, context=[])])
    rows = csv_of(build(org, admin))
    assert sorted(r["Actor name"] for r in rows) == sorted("'" + d for d in dangerous)
    assert csv_cell("plain") == "plain" and csv_cell("a=b") == "a=b" and csv_cell(None) == ""


def test_the_export_is_itself_an_event(org, admin, clock):
    record_many(org, [spec(), spec()])
    export = build(org, admin, {"action": ["group_created"]})
    event = Event.objects.get(action__key="audit_log_exported")
    assert event.message == "Alice Admin exported 2 activities from the audit log"
    assert (event.actor_email, event.ip, event.user_agent) == (
        "alice@acme.test",
        "198.51.100.7",
        "Export UA",
    )
    assert event.details["count"] == 2 and event.details["export_id"] == export.pk
    assert "Activity: Created group" in event.details["filters"]


def test_the_ready_email_names_the_org_filters_count_and_link(org, admin, clock):
    record_many(org, [spec()])
    export = build(org, admin)
    (message,) = mail.outbox
    assert message.subject == "Your audit log is ready to download"
    assert message.to == ["alice@acme.test"]
    link = f"https://audit.example.com/o/{org.pk}/audit-log/exports/{export.pk}/download/"
    assert "Acme" in message.body and "1 activity" in message.body
    assert "Last 7 days" in message.body and f"Download audit log: {link}" in message.body
    html, mime = message.alternatives[0]
    assert mime == "text/html" and f'href="{link}"' in html and "Download audit log" in html
    assert ExportRequest.objects.get(pk=export.pk).email_sent_at is not None


def test_a_failed_export_sends_the_failure_email(org, admin, clock, monkeypatch, private_storage):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "csv_rows_write", broken)
    export = build(org, admin)
    assert export.status == "failed" and export.error == "An unexpected error."
    (message,) = mail.outbox
    assert message.subject == "Your audit log export failed"
    assert "Acme" in message.body and "/audit-log/exports/" in message.body
    assert not [p for p in private_storage.rglob("*") if p.is_file()]
    assert not Event.objects.filter(action__key="audit_log_exported").exists()


class WorkerDied(BaseException):
    """Stands for the process being killed: no except-Exception handler runs."""


def test_a_retry_after_the_worker_died_makes_one_file_one_event_one_email(
    org, admin, clock, monkeypatch, private_storage
):
    record_many(org, [spec(ago=timedelta(minutes=m)) for m in range(1, 6)])
    export = export_for(org, admin)
    real_write = services.csv_rows_write

    def dies_midway(out, events, *, limit):
        real_write(out, events, limit=2)
        raise WorkerDied

    monkeypatch.setattr(services, "csv_rows_write", dies_midway)
    with pytest.raises(WorkerDied):
        export_file_build(export_id=export.pk)
    assert ExportRequest.objects.get(pk=export.pk).status == "running"

    monkeypatch.setattr(services, "csv_rows_write", real_write)
    clock.advance(seconds=360)  # Q_RETRY: the dead builder's lease has lapsed
    export = export_file_build(export_id=export.pk)  # django-q2 retries the task
    export_file_build(export_id=export.pk)  # and once more, for good measure
    files = sorted(p.name for p in private_storage.rglob("*") if p.is_file())
    assert files == [f"{export.file_key}.csv", f"{export.file_key}.csv.manifest.json"]
    assert export.status == "ready" and export.row_count == 5 and export.attempts == 2
    assert len(csv_of(export)) == 5
    assert len(mail.outbox) == 1
    assert Event.objects.filter(action__key="audit_log_exported").count() == 1


def test_an_email_that_could_not_be_sent_is_sent_by_the_retry(org, admin, clock, monkeypatch):
    record_many(org, [spec()])
    export = export_for(org, admin)

    def smtp_down(self, *args, **kwargs):
        raise OSError("connection refused")

    with monkeypatch.context() as m:
        m.setattr("django.core.mail.EmailMessage.send", smtp_down)
        with pytest.raises(OSError):
            export_file_build(export_id=export.pk)
    assert ExportRequest.objects.get(pk=export.pk).email_sent_at is None
    export_file_build(export_id=export.pk)
    export_file_build(export_id=export.pk)
    assert len(mail.outbox) == 1
    assert Event.objects.filter(action__key="audit_log_exported").count() == 1


def test_invalid_saved_filters_fail_the_export(org, admin, clock):
    export = export_for(org, admin)
    ExportRequest.objects.filter(pk=export.pk).update(filters={"action": ["no_such_action"]})
    export = export_file_build(export_id=export.pk)
    assert export.status == "failed"
    assert export.error == "The filters of this export are no longer valid."


def test_an_export_whose_worker_died_on_every_try_is_failed_and_told(org, admin, clock):
    from exports.services import exports_stalled_fail
    from exports.tasks import exports_stalled

    record_many(org, [spec()])
    export = export_for(org, admin)
    ExportRequest.objects.filter(pk=export.pk).update(status="running", started_at=clock.now)
    clock.advance(minutes=10)  # still within django-q2's retries
    assert exports_stalled_fail() == 0
    clock.advance(hours=1)
    assert exports_stalled()["failed"] == 1
    export.refresh_from_db()
    assert export.status == "failed" and export.error == "The export did not finish."
    assert [m.subject for m in mail.outbox] == ["Your audit log export failed"]
    assert exports_stalled_fail() == 0 and len(mail.outbox) == 1
