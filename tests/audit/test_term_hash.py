"""Search terms are stored as 64-bit hashes (audit.recording.term_hash, migration 0015).
Two terms can share a hash; whatever shows a search's events (the page, the API, the
export) re-checks that each event carries the term, so a collision never shows a wrong
row. A collision is forced here by writing a term row with the hash of "carol jones"
for an event that does not name Carol."""

import csv
import importlib
import io
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from audit.filters import EventFilter
from audit.models import EventTerm
from audit.recording import term_hash
from audit.selectors import event_page_at, event_slice, event_walk
from audit.services import Actor, event_record, item, user_item
from exports.services import export_file_build, export_filter, export_request_create
from orgs.services import api_key_create
from tests.conftest import make_user, term_events, term_hashes
from tests.conftest import url as org_url

TERM = "carol jones"


def test_the_hash_is_the_first_8_bytes_of_sha256_as_a_signed_bigint():
    assert term_hash(TERM) == 8679177448208110747
    assert term_hash("") == -2039914840885289964  # e3b0c442 98fc1c14...: negative, signed
    assert all(-(2**63) <= term_hash(t) < 2**63 for t in ("a", "é", "x" * 200))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the migration's SQL")
@pytest.mark.django_db
@pytest.mark.parametrize("term", [TERM, "", "zoë@münchen.example", "x" * 200, "site-admins"])
def test_postgresql_computes_the_same_hash_as_python(term):
    pg_hash = importlib.import_module("audit.migrations.0015_term_hash").PG_HASH
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {pg_hash} FROM (SELECT %s::varchar AS term) AS t", [term])
        assert cursor.fetchone()[0] == term_hash(term)


@pytest.fixture
def collision(org, admin):
    """Three events that name Carol, and two newer ones that do not but have a term row
    with her hash (as if another term shared it)."""
    carol = make_user("carol@acme.test", org, name="Carol Jones")
    now = timezone.now()
    real = [
        event_record(
            organization=org,
            action="group_member_added",
            actor=Actor.for_user(admin),
            occurred_at=now - timedelta(hours=10 + i),
            context=[user_item(carol), item("group", 1, "engineering")],
        ).event
        for i in range(3)
    ]
    fake = [
        event_record(
            organization=org,
            action="group_created",
            actor=Actor.for_user(admin),
            occurred_at=now - timedelta(hours=i + 1),
            context=[item("group", 2, f"impostor-{i}")],
        ).event
        for i in range(2)
    ]
    for event in fake:
        EventTerm.objects.create(
            organization=org,
            term_hash=term_hash(TERM),
            occurred_at=event.occurred_at,
            event=event,
            oldest_at=event.occurred_at,
            event_ids=[event.pk],
        )
    return [e.pk for e in real], [e.pk for e in fake]


def search(org, **params):
    f = EventFilter({"q": " Carol Jones ", "range": "7d", **params}, org=org)
    assert f.is_valid(), f.errors
    return f


def test_the_colliding_rows_are_found_by_hash_but_never_returned(org, collision):
    real, fake = collision
    hits = EventTerm.objects.filter(organization=org, term_hash=term_hash(TERM))
    assert set(term_events(hits)) == {*real, *fake}
    assert [e.pk for e in event_slice(search(org), None, newer=False, limit=10)] == real
    # A step the collisions cut short takes another: still `limit` rows when there are.
    assert [e.pk for e in event_slice(search(org), None, newer=False, limit=2)] == real[:2]
    assert [e.pk for e in event_walk(search(org), limit=10, chunk=1)] == real


def test_the_pages_hold_no_colliding_row_and_page_on_correctly(org, collision):
    real, _ = collision
    first = event_page_at(search(org), None, size=2)
    assert [e.pk for e in first.events] == real[:2] and first.older_position is not None
    second = event_page_at(search(org), first.older_position, size=2)
    assert [e.pk for e in second.events] == real[2:] and second.older_position is None
    back = event_page_at(search(org), second.newer_position, newer=True, size=2)
    assert [e.pk for e in back.events] == real[:2]


def test_the_audit_log_page_does_not_show_them(client, org, admin, collision):
    real, fake = collision
    client.force_login(admin)
    body = client.get(org_url("audit:event-list", org, q="Carol Jones")).content.decode()
    assert all(f"/events/{pk}/" in body for pk in real)
    assert not any(f"/events/{pk}/" in body for pk in fake)
    assert "impostor" not in body


def test_the_api_does_not_return_them(client, org, collision):
    real, _ = collision
    _, secret = api_key_create(organization=org, name="SIEM", days=30, by=None)
    response = client.get(
        f"/admin/v1/orgs/{org.pk}/events",
        {"q": "carol jones", "limit": 2},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert [int(e["id"]) for e in body["data"]] == real[:2]
    more = client.get(
        f"/admin/v1/orgs/{org.pk}/events",
        {"q": "carol jones", "limit": 2, "cursor": body["meta"]["next"]},
        headers={"Authorization": f"Bearer {secret}"},
    ).json()
    assert [int(e["id"]) for e in more["data"]] == real[2:]


def test_the_export_does_not_contain_them(org, admin, collision, settings, tmp_path):
    settings.PRIVATE_STORAGE_DIR = tmp_path
    real, _ = collision
    f = export_filter(organization=org, user=admin, filters={"q": "carol jones"})
    assert f.is_valid(), f.errors
    export = export_request_create(
        organization=org,
        requested_by=admin,
        filters=f.params(),
        filters_summary=f.summary(),
        ip="198.51.100.7",
        user_agent="pytest",
    )
    export = export_file_build(export_id=export.pk)
    rows = list(csv.DictReader(io.StringIO(export.file_path.read_text(encoding="utf-8"))))
    assert [int(r["Event ID"]) for r in rows] == real


def test_the_purge_removes_the_term_rows_by_hash(org, admin):
    from audit.retention import audit_log_purge

    now = timezone.now()
    old = event_record(
        organization=org,
        action="group_created",
        actor=Actor.for_user(admin),
        occurred_at=now - timedelta(days=200),
        context=[item("group", 1, "Platform")],
    ).event
    kept = event_record(
        organization=org,
        action="group_created",
        actor=Actor.for_user(admin),
        occurred_at=now - timedelta(days=1),
        context=[item("group", 1, "Platform")],
    ).event
    platform = EventTerm.objects.filter(organization=org, term_hash=term_hash("platform"))
    assert set(platform.values_list("event_id", flat=True)) == {old.pk, kept.pk}
    audit_log_purge(now=now, pause=0)
    assert not term_hashes(old.pk)
    assert set(platform.values_list("event_id", flat=True)) == {kept.pk}
    assert len(term_hashes(kept.pk)) == 3  # name, email, group


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_migration_0015_turns_each_stored_term_into_its_hash_and_back(org, admin):
    from django.core.management import call_command

    event = event_record(
        organization=org,
        action="group_member_added",
        actor=Actor.for_user(admin),
        context=[user_item(admin), item("group", 1, "Site-Admins")],
    ).event
    hashes = term_hashes(event)
    try:
        # Backwards: the text, derived again from the event.
        call_command("migrate", "audit", "0014", verbosity=0)
        with connection.cursor() as cursor:
            cursor.execute("SELECT term FROM audit_eventterm WHERE event_id = %s", [event.pk])
            texts = {row[0] for row in cursor.fetchall()}
            assert texts == {"alice admin", "alice@acme.test", "site-admins"}
            # A row as an older derivation may have left it: converted all the same.
            cursor.execute(
                "INSERT INTO audit_eventterm (organization_id, term, occurred_at, event_id) "
                "SELECT organization_id, 'legacy term', occurred_at, event_id "
                "FROM audit_eventterm WHERE event_id = %s LIMIT 1",
                [event.pk],
            )
    finally:
        call_command("migrate", verbosity=0)
    after = term_hashes(event)
    assert after == hashes | {term_hash("legacy term")}
    assert hashes == {term_hash(t) for t in texts}
    # The guard is back on the rebuilt table.
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError, match="append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM audit_eventterm WHERE event_id = %s", [event.pk])
