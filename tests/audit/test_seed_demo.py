import re

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from audit.catalogue import ACTIONS
from audit.demo import ActivityGenerator, demo_orgs_create, template_fields
from audit.models import ActivitySetting, Event
from audit.services import event_record_batch
from orgs.models import Membership, Organization, User


def test_seed_demo_creates_the_demo_and_is_idempotent(db, capsys, tmp_path):
    keys = tmp_path / "keys.json"
    call_command("seed_demo", events=300, simulator_keys=keys)
    out = capsys.readouterr().out
    assert "admin@acme.test / audit-demo" in out and "staff@acme.test / audit-demo" in out
    counts = (Organization.objects.count(), User.objects.count(), Event.objects.count())
    assert counts[0] == 4 and counts[1] >= 200 and counts[2] >= 250
    call_command("seed_demo", events=300, simulator_keys=keys)
    assert (Organization.objects.count(), User.objects.count(), Event.objects.count()) == counts

    admin = authenticate(email="admin@acme.test", password="audit-demo")
    assert admin is not None
    assert Membership.objects.filter(user=admin, role="admin").count() == 2
    assert authenticate(email="staff@acme.test", password="audit-demo").is_staff
    assert ActivitySetting.objects.filter(content_stored=False).count() == 1
    plans = set(Organization.objects.values_list("plan__key", flat=True))
    assert plans == {"none", "guard-standard", "guard-premium", "cloud-enterprise"}
    # Events follow each plan: nothing for the org without one, no user-created
    # activity on Guard Standard, every category the premium org's plan covers.
    assert not Event.objects.filter(organization__plan__key="none").exists()
    assert not Event.objects.filter(
        organization__plan__key="guard-standard", action__category="user_created"
    ).exists()
    premium = set(
        Event.objects.filter(organization__plan__key="guard-premium").values_list(
            "action__category", flat=True
        )
    )
    assert {"user_created", "groups", "user_accounts", "security_policies"} <= premium


def test_if_empty_leaves_an_existing_database_alone(db, org, capsys, tmp_path):
    call_command("seed_demo", events=100, if_empty=True, simulator_keys=tmp_path / "k.json")
    assert "not seeding" in capsys.readouterr().out
    assert Organization.objects.count() == 1


def _placeholders() -> list[str]:
    """What the recorder writes for each template field left without a value."""
    fields = set().union(*(template_fields(a.template) for a in ACTIONS))
    return [("an " if f[0] in "aeiou" else "a ") + f for f in sorted(fields)]


def test_every_action_the_generator_makes_renders_its_message_in_full(db):
    acme = demo_orgs_create()[0]
    # Acme keeps no Jira content (issue names are dropped by design): store it all here.
    ActivitySetting.objects.update(content_stored=True)
    generator = ActivityGenerator(acme, seed=3)
    now = timezone.now()
    specs = [generator.spec(action, now) for action in ACTIONS]
    assert not event_record_batch(organization=acme, specs=specs).skipped
    messages = dict(Event.objects.values_list("action__key", "message"))
    assert set(messages) == {a.key for a in ACTIONS}
    placeholders = _placeholders()
    unfilled = {
        key: message
        for key, message in messages.items()
        if any(re.search(rf"\b{p}\b", message) for p in placeholders)
    }
    assert unfilled == {}
    # The names drawn are the ones the message shows.
    added = next(s for s in specs if s.action == "group_member_added")
    user, group = sorted(added.context, key=lambda it: it["type"], reverse=True)
    assert messages["group_member_added"] == (
        f"{added.actor.name} added {user['name']} to group {group['name']}"
    )


def test_the_same_seed_makes_the_same_activity(db):
    acme = demo_orgs_create()[0]
    now = timezone.now()
    first, again, other = (
        list(ActivityGenerator(acme, seed=seed).specs(2000, now=now)) for seed in (4, 4, 5)
    )
    assert first == again
    assert first != other
    # Every action the plan records turns up.
    assert {s.action for s in first} == {a.key for a in ActivityGenerator(acme).actions}


def _consistent(org) -> int:
    """Checks what recording would have written for the organization's events: each
    event's terms (by hash) and hash, and the hourly totals; returns its events."""
    from audit.integrity import verify_org
    from audit.models import EventHourlyCount, EventHourlyTotal
    from audit.recording import event_terms, term_hash
    from audit.verify import event_hash, event_values
    from tests.conftest import seal, term_hashes

    events = list(Event.objects.filter(organization=org).select_related("action"))
    for event in events:
        derived = event_terms(
            actor_type=event.actor_type,
            actor_name=event.actor_name,
            actor_email=event.actor_email,
            site_name=event.site_name,
            items=[*event.context, *event.container],
            action=event.action.key,
            details=event.details,
        )
        stored = term_hashes(event)
        assert stored == {term_hash(t) for t in derived}, event.pk
        values = {f.attname: getattr(event, f.attname) for f in Event._meta.concrete_fields}
        values["action"] = event.action.key
        assert bytes(event.hash) == event_hash(event_values(values)), event.pk
    hourly = EventHourlyTotal.objects.filter(organization=org).values_list("count", flat=True)
    assert sum(hourly) == len(events)
    counts = EventHourlyCount.objects.filter(organization=org).values_list("count", flat=True)
    assert sum(counts) == len(events)
    seal(org)
    assert verify_org(org).ok
    return len(events)


# Committed (not the test's own transaction): on PostgreSQL sealing takes only events of
# transactions that have ended.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_seed_demo_with_orgs_fills_acme_and_shares_as_many_across_the_others(capsys, tmp_path):
    keys = tmp_path / "keys.json"
    call_command("seed_demo", events=400, orgs=3, jobs=1, simulator_keys=keys)
    assert "3 customer organizations ready" in capsys.readouterr().out
    acme = Organization.objects.get(name="Acme Corporation")
    customers = list(Organization.objects.filter(name__startswith="Customer ").order_by("name"))
    assert [c.name for c in customers] == ["Customer 0001", "Customer 0002", "Customer 0003"]
    # And the simulator's ingest keys, one event each (one per Acme product).
    assert _consistent(acme) == 400 + 3
    assert sorted(_consistent(c) for c in customers) == [133, 133, 134]
    # Spread over the retention window, newest today.
    times = Event.objects.filter(organization=customers[0]).values_list("occurred_at", flat=True)
    now = timezone.now()
    assert now - min(times) > timezone.timedelta(days=120)
    assert now - max(times) < timezone.timedelta(days=7)
    # Each customer signs in: its admin, with the demo password.
    admin = authenticate(email="admin@customer-0002.test", password="audit-demo")
    assert Membership.objects.get(user=admin).organization == customers[1]
    before = Event.objects.count()
    call_command("seed_demo", events=400, orgs=3, jobs=1, simulator_keys=keys)
    assert Event.objects.count() == before and Organization.objects.count() == 7


def test_a_big_organization_is_seeded_in_slices_of_the_window(db):
    from datetime import timedelta

    from audit.demo_load import TASK_EVENTS, tasks_for

    acme = demo_orgs_create()[0]
    now = timezone.now()
    tasks = tasks_for(acme, 2 * TASK_EVENTS + 1, 1, now)
    assert sum(t.count for t in tasks) == 2 * TASK_EVENTS + 1
    assert max(t.count for t in tasks) - min(t.count for t in tasks) <= 1
    assert [t.now for t in tasks] == [now - timedelta(days=60 * n) for n in range(3)]
    assert {t.days for t in tasks} == {60} and len({t.seed for t in tasks}) == 3


def _index_definitions() -> list:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexdef FROM pg_indexes "
            "WHERE tablename IN ('audit_event', 'audit_eventterm') ORDER BY 1, 2"
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname IN "
            "('audit_event', 'audit_eventterm', 'audit_eventhourlycount', "
            "'audit_eventhourlytotal') ORDER BY 1"
        )
        options = cursor.fetchall()
        # The constraints, the partitions' included: the foreign keys are made again.
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated "
            "FROM pg_constraint WHERE conrelid::regclass::text LIKE 'audit_event%' ORDER BY 1, 2"
        )
        return indexes + options + cursor.fetchall()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the PostgreSQL bulk load")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_on_an_empty_postgresql_database_the_seed_builds_the_indexes_once_in_processes(
    capsys, tmp_path
):
    before = _index_definitions()
    assert any("event_org_time" in row[1] for row in before if row[0] == "audit_event")
    call_command("seed_demo", events=3000, orgs=4, jobs=2, simulator_keys=tmp_path / "k.json")
    out = capsys.readouterr().out
    assert "Bulk load: indexes and autovacuum off until the end." in out
    assert "indexes built in" in out and "VACUUM (ANALYZE) in" in out
    assert "foreign keys checked in" in out
    assert _index_definitions() == before  # the same indexes, autovacuum back on
    acme = Organization.objects.get(name="Acme Corporation")
    assert _consistent(acme) == 3000 + 3  # and the simulator's keys
    customers = Organization.objects.filter(name__startswith="Customer ")
    assert sum(_consistent(c) for c in customers) == 3000
