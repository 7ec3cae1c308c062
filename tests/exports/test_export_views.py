"""The export pages: Export log, the download link, Export again, the Exports page."""

import json
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.core import mail
from django.db import connection
from django.urls import reverse
from django_q.models import Schedule

from audit.models import Event
from exports.models import ExportRequest
from exports.services import export_files_purge_expired, manifest_path
from orgs.models import Membership
from tests.conftest import make_user, verify_offline

from .conftest import parse_csv, record_many, spec


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


@pytest.fixture
def other_admin(org):
    return make_user("dave@acme.test", org, Membership.Role.ADMIN, name="Dave Admin")


def create_url(org):
    return reverse("exports:export-create", args=[org.pk])


def download_url(export):
    return reverse("exports:export-download", args=[export.organization_id, export.pk])


@pytest.fixture
def ready_export(org, admin, admin_client, clock, django_capture_on_commit_callbacks):
    """An export made through the page; the cluster runs in sync mode under pytest, so
    the task has run when the commit callbacks have."""
    record_many(org, [spec("group_created"), spec("group_deleted", ago=timedelta(hours=2))])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(create_url(org), {"range": "7d"})
    assert response.status_code == 302
    return ExportRequest.objects.get()


# -- Export log -----------------------------------------------------------------------


def test_export_runs_the_job_and_returns_to_the_audit_log_with_a_message(
    org, admin_client, clock, django_capture_on_commit_callbacks
):
    record_many(org, [spec("group_created"), spec("group_deleted")])
    data = {
        "q": "engineering",
        "action": ["group_created"],
        "range": "7d",
        "back": "q=engineering&range=7d&action=group_created",
    }
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_client.post(create_url(org), data)
    assert len(callbacks) == 1  # enqueued on commit
    assert response.status_code == 302
    assert response["Location"] == (
        reverse("audit:event-list", args=[org.pk]) + "?q=engineering&range=7d&action=group_created"
    )
    assert messages_of(response) == ["We'll email you when your export is ready."]
    export = ExportRequest.objects.get()
    assert export.status == "ready" and export.row_count == 1
    assert export.filters["q"] == "engineering" and export.filters["action"] == ["group_created"]
    assert export.filters_summary == [
        "Search: engineering",
        "Last 7 days",
        "Activity: Created group",
    ]
    assert export.ip == "127.0.0.1"
    assert [m.subject for m in mail.outbox] == ["Your audit log is ready to download"]


def test_bad_filters_say_why_and_export_nothing(org, admin_client):
    back = "action=no_such_thing\r\nX-Evil: 1"
    response = admin_client.post(create_url(org), {"action": "no_such_thing", "back": back})
    assert response.status_code == 302
    assert response["Location"].endswith("?action=no_such_thing%0D%0AX-Evil%3A+1")
    (message,) = messages_of(response)
    assert message.startswith("Nothing was exported. Check the filters: Unknown activity")
    assert not ExportRequest.objects.exists()


def test_an_org_without_the_audit_log_cannot_export(org, admin_client):
    from orgs.models import Plan

    org.plan = Plan.objects.get(audit_log=False)
    org.save()
    response = admin_client.post(create_url(org), {})
    assert "does not include the audit log" in messages_of(response)[0]
    assert not ExportRequest.objects.exists()


def test_the_confirmation_page_states_the_filters_and_the_limit(org, admin_client, clock):
    url = reverse("exports:export-new", args=[org.pk])
    response = admin_client.get(url, {"action": "group_created", "range": "30d"})
    assert response.status_code == 200
    text = response.content.decode()
    assert "Last 30 days" in text and "Activity: Created group" in text
    assert "up to the newest 10,000 activities" in text
    assert f'action="{create_url(org)}"' in text
    assert 'name="action" value="group_created"' in text and 'name="range" value="custom"' in text


def test_the_confirmation_page_shows_filter_errors(org, admin_client):
    url = reverse("exports:export-new", args=[org.pk])
    response = admin_client.get(url, {"from": "yesterday"})
    assert response.status_code == 200
    assert "Enter a date as YYYY-MM-DD" in response.content.decode()


@pytest.mark.parametrize("name", ["export-new", "export-create", "export-list"])
def test_outsiders_get_404_and_members_403(name, org, client, member, outsider):
    url = reverse(f"exports:{name}", args=[org.pk])
    method = client.post if name == "export-create" else client.get
    client.force_login(outsider)
    assert method(url).status_code == 404
    client.force_login(member)
    assert method(url).status_code == 403


@pytest.mark.parametrize(
    ("name", "wrong"), [("export-new", "post"), ("export-create", "get"), ("export-list", "post")]
)
def test_wrong_methods_get_405(name, wrong, org, admin_client):
    url = reverse(f"exports:{name}", args=[org.pk])
    assert getattr(admin_client, wrong)(url).status_code == 405


def test_signed_out_visitors_are_sent_to_sign_in(org, client):
    response = client.get(reverse("exports:export-list", args=[org.pk]))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


# -- the download link ----------------------------------------------------------------


def test_the_requester_downloads_the_file(ready_export, admin_client, org):
    response = admin_client.get(download_url(ready_export))
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"] == (
        'attachment; filename="audit-log-acme-2026-11-20.csv"'
    )
    rows = parse_csv(b"".join(response.streaming_content))
    assert [r["Activity key"] for r in rows] == ["group_created", "group_deleted"]


def test_anyone_else_gets_404(ready_export, client, other_admin, member, outsider, staff):
    for user in (other_admin, member, outsider, staff):
        client.force_login(user)
        assert client.get(download_url(ready_export)).status_code == 404, user


def test_a_requester_who_lost_the_admin_role_gets_403(ready_export, admin, admin_client):
    Membership.objects.filter(user=admin).update(role=Membership.Role.MEMBER)
    assert admin_client.get(download_url(ready_export)).status_code == 403


def test_the_link_expires_exactly_one_day_after_the_file_is_ready(
    ready_export, admin_client, clock
):
    clock.now = ready_export.finished_at + timedelta(days=1) - timedelta(microseconds=1)
    assert admin_client.get(download_url(ready_export)).status_code == 200
    clock.now = ready_export.finished_at + timedelta(days=1)
    response = admin_client.get(download_url(ready_export))
    assert response.status_code == 410
    text = response.content.decode()
    assert "This link has expired" in text and "Export again" in text
    assert reverse(
        "exports:export-again", args=[ready_export.organization_id, ready_export.pk]
    ) in (text)


def test_export_again_reruns_the_same_filters(
    ready_export, admin_client, clock, org, django_capture_on_commit_callbacks
):
    clock.advance(days=2)
    url = reverse("exports:export-again", args=[org.pk, ready_export.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("exports:export-list", args=[org.pk])
    again = ExportRequest.objects.exclude(pk=ready_export.pk).get()
    assert again.filters == ready_export.filters
    assert again.status == "ready" and again.row_count == 2  # the same window, the same rows
    assert admin_client.get(download_url(again)).status_code == 200


def test_export_again_is_only_for_the_requester(ready_export, client, other_admin, org):
    client.force_login(other_admin)
    url = reverse("exports:export-again", args=[org.pk, ready_export.pk])
    assert client.post(url).status_code == 404
    assert ExportRequest.objects.count() == 1


def test_a_pending_export_link_says_it_is_being_prepared(org, admin, admin_client):
    export = ExportRequest.objects.create(organization=org, requested_by=admin)
    response = admin_client.get(download_url(export))
    assert response.status_code == 200
    assert "Your export is being prepared" in response.content.decode()


def test_a_file_deleted_by_the_cleanup_reads_as_expired(ready_export, admin_client, clock):
    clock.advance(days=1, seconds=1)
    assert export_files_purge_expired() == 1
    assert not ready_export.file_path.exists()
    assert export_files_purge_expired() == 0
    assert admin_client.get(download_url(ready_export)).status_code == 410


def test_the_cleanup_keeps_files_that_have_not_expired(ready_export, clock):
    assert export_files_purge_expired() == 0
    assert ready_export.file_path.exists()


def test_the_cleanup_is_scheduled_once_in_the_worker(db):
    (purge,) = Schedule.objects.filter(func="exports.tasks.export_files_purge")
    assert purge.schedule_type == Schedule.HOURLY and purge.repeats == -1
    (stalled,) = Schedule.objects.filter(func="exports.tasks.exports_stalled")
    assert (stalled.name, stalled.schedule_type, stalled.minutes, stalled.repeats) == (
        "exports: recover stalled exports",
        Schedule.MINUTES,
        5,
        -1,
    )


def test_the_task_returns_the_purge_count(ready_export, clock):
    from exports.tasks import export_files_purge

    clock.advance(days=3)
    assert export_files_purge() == 1


def test_private_storage_is_not_reachable_by_url(ready_export, admin_client, settings):
    from django.conf import settings as live

    private = live.PRIVATE_STORAGE_DIR
    for served in [live.STATIC_ROOT, *live.STATICFILES_DIRS]:
        assert not str(private).startswith(str(served))
    relative = ready_export.file_name
    for url in (
        f"/static/{relative}",
        f"/{relative}",
        f"/var/private/{relative}",
        f"/media/{relative}",
    ):
        assert admin_client.get(url).status_code == 404, url
    # The default location is outside anything served, too.
    assert "static" not in str(live.BASE_DIR / "var" / "private")


# -- the Exports page -----------------------------------------------------------------


def test_the_exports_page_lists_mine_with_status_count_and_link(
    ready_export, admin_client, org, other_admin, django_assert_max_num_queries
):
    ExportRequest.objects.create(organization=org, requested_by=other_admin, filters_summary=["x"])
    url = reverse("exports:export-list", args=[org.pk])
    with django_assert_max_num_queries(8):
        response = admin_client.get(url)
    text = response.content.decode()
    assert response.status_code == 200
    assert "Ready" in text and "Last 7 days" in text and ">2<" in text
    assert download_url(ready_export) in text and "Download audit log" in text
    assert text.count('<tr id="export-') == 1  # not the other admin's
    assert "data-export-poll" not in text


def test_the_exports_page_polls_while_one_is_pending(org, admin, admin_client):
    ExportRequest.objects.create(organization=org, requested_by=admin, filters_summary=["x"])
    url = reverse("exports:export-list", args=[org.pk])
    page = admin_client.get(url).content.decode()
    assert "Queued" in page and f'data-export-poll="{url}?rows=1"' in page
    assert "js/exports.js" in page
    rows = admin_client.get(url, {"rows": "1"}).content.decode()
    assert rows.lstrip().startswith('<div id="export-table"') and "Queued" in rows
    assert "<html" not in rows


def test_expired_and_failed_exports_offer_export_again(org, admin, admin_client, clock):
    ExportRequest.objects.create(
        organization=org,
        requested_by=admin,
        status="ready",
        finished_at=clock.now - timedelta(days=2),
        expires_at=clock.now - timedelta(days=1),
        row_count=4,
    )
    ExportRequest.objects.create(
        organization=org, requested_by=admin, status="failed", error="An unexpected error."
    )
    text = admin_client.get(reverse("exports:export-list", args=[org.pk])).content.decode()
    assert "Expired" in text and "Failed" in text and text.count("Export again") == 2
    assert "Download audit log" not in text


def test_the_export_event_is_recorded_once_with_the_requests_ip(ready_export):
    event = Event.objects.get(action__key="audit_log_exported")
    assert event.ip == "127.0.0.1" and event.details["count"] == 2


def test_staff_see_exports_read_only_in_the_django_admin(ready_export, client, staff):
    client.force_login(staff)
    changelist = client.get(reverse("admin:exports_exportrequest_changelist"))
    assert changelist.status_code == 200 and "alice@acme.test" in changelist.content.decode()
    detail = client.get(reverse("admin:exports_exportrequest_change", args=[ready_export.pk]))
    assert detail.status_code == 200 and 'type="submit" value="Save"' not in detail.content.decode()
    assert client.get(reverse("admin:exports_exportrequest_add")).status_code == 403


# -- the signed manifest --------------------------------------------------------------


def manifest_url(export):
    return reverse("exports:export-manifest", args=[export.organization_id, export.pk])


def test_the_requester_downloads_a_signed_manifest_that_verifies_the_file_offline(
    ready_export, admin_client, tmp_path
):
    response = admin_client.get(manifest_url(ready_export))
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        'attachment; filename="audit-log-acme-2026-11-20.manifest.json"'
    )
    manifest = json.loads(b"".join(response.streaming_content))
    assert manifest["rows"] == 2 and manifest["sha256"] == ready_export.sha256
    assert manifest["filters"] == ready_export.filters
    if connection.vendor == "sqlite":  # PostgreSQL seals only committed events
        assert [b["sequence"] for b in manifest["blocks"]] == [1]
        assert manifest["unsealed_events"] == 0
    csv_file, manifest_file = tmp_path / "audit-log.csv", tmp_path / "manifest.json"
    csv_file.write_bytes(ready_export.file_path.read_bytes())
    manifest_file.write_text(json.dumps(manifest))
    result = verify_offline("export", str(csv_file), str(manifest_file), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK: audit-log.csv is the export of " in result.stdout and "2 rows" in result.stdout

    csv_file.write_bytes(csv_file.read_bytes().replace(b"group_deleted", b"group_created"))
    result = verify_offline("export", str(csv_file), str(manifest_file), tmp_path=tmp_path)
    assert result.returncode == 1 and "SHA-256 differs" in result.stderr
    manifest["rows"] = 1  # a manifest edited to match a shortened file
    manifest_file.write_text(json.dumps(manifest))
    result = verify_offline("export", str(csv_file), str(manifest_file), tmp_path=tmp_path)
    assert result.returncode == 1 and "signature" in result.stderr


def test_only_the_requester_gets_the_manifest(ready_export, client, other_admin, member, outsider):
    for user in (other_admin, member, outsider):
        client.force_login(user)
        assert client.get(manifest_url(ready_export)).status_code == 404, user
    client.force_login(ready_export.requested_by)
    assert client.post(manifest_url(ready_export)).status_code == 405


def test_an_expired_exports_manifest_goes_with_its_file(ready_export, admin_client, clock):
    clock.advance(days=2)
    response = admin_client.get(manifest_url(ready_export))
    assert response.status_code == 302 and response["Location"].endswith("/download/")
    export_files_purge_expired()
    assert not manifest_path(ready_export.file_path).exists()
