from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from audit.models import Event, EventHourlyCount, EventHourlyTotal, EventTerm, IngestedEvent
from audit.retention import audit_log_purge, retention_cutoff
from audit.services import Actor, EventSpec, event_record, event_record_batch, item, user_item
from orgs.models import Organization, Plan
from tests.conftest import in_threads, make_user, term_hashes

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
RETENTION = timedelta(days=180)


def record(org, when, action="group_member_added", **kwargs):
    return event_record(organization=org, action=action, occurred_at=when, **kwargs).event


def purge(**kwargs):
    return audit_log_purge(now=NOW, pause=0, **kwargs)


def ids(org) -> set[int]:
    return set(
        Event.objects.filter(organization=org)
        .exclude(action__key="audit_log_purged")
        .values_list("pk", flat=True)
    )


@pytest.fixture
def carol(org):
    return make_user("carol@acme.test", org, name="Carol Jones")


def test_an_event_a_second_inside_retention_is_kept_a_second_past_is_purged(org, admin, carol):
    kwargs = {"actor": Actor.for_user(admin), "context": [user_item(carol)]}
    kept = record(org, NOW - RETENTION + timedelta(seconds=1), **kwargs)
    purged = record(org, NOW - RETENTION - timedelta(seconds=1), **kwargs)
    result = purge()
    assert ids(org) == {kept.pk}
    assert result.events == 1 and not Event.objects.filter(pk=purged.pk).exists()
    assert retention_cutoff(org, NOW) == NOW - RETENTION


def test_retention_is_the_plans_and_staff_may_raise_it(org, other_org):
    longer = Plan.objects.get(key="cloud-enterprise")
    longer.retention_days = 400
    longer.save()
    other_org.plan = longer
    other_org.save()
    old = NOW - timedelta(days=300)
    record(org, old)
    kept = record(other_org, old)
    gone = record(other_org, NOW - timedelta(days=401))
    result = purge()
    assert ids(org) == set()
    assert ids(other_org) == {kept.pk}
    assert {p.organization.pk: p.events for p in result.orgs} == {org.pk: 1, other_org.pk: 1}
    assert not Event.objects.filter(pk=gone.pk).exists()


def test_search_terms_are_purged_with_their_events_and_only_theirs(org, admin, carol, site):
    kwargs = {
        "actor": Actor.for_user(admin),
        "context": [user_item(carol), item("group", 3, "Engineering")],
        "site": site,
    }
    old = [record(org, NOW - RETENTION - timedelta(hours=h), **kwargs) for h in (1, 2)]
    new = record(org, NOW - timedelta(days=1), **kwargs)
    terms_per_event = len(term_hashes(new.pk))
    assert terms_per_event == 6  # names and emails of alice and carol, group, site
    result = purge()
    assert not EventTerm.objects.filter(event_id__in=[e.pk for e in old]).exists()
    assert EventTerm.objects.filter(organization=org).count() == terms_per_event
    assert result.orgs[0].terms == 2 * terms_per_event


def test_a_batch_takes_only_its_own_events_terms_even_at_the_same_instant(org, admin, carol):
    kwargs = {"actor": Actor.for_user(admin), "context": [user_item(carol)]}
    at = NOW - RETENTION - timedelta(hours=1)
    same_instant = [record(org, at, **kwargs) for _ in range(5)]  # ties broken by id
    later = record(org, at + timedelta(minutes=1), **kwargs)
    left = []

    def between(progress):
        remaining = Event.objects.filter(organization=org).order_by("occurred_at", "id")
        left.append({e.pk: len(term_hashes(e.pk)) for e in remaining})

    purge(batch_size=2, on_batch=between)
    pks = [e.pk for e in same_instant]
    assert left[0] == {pk: 4 for pk in pks[2:] + [later.pk]}
    assert left[1] == {pks[4]: 4, later.pk: 4}
    assert not EventTerm.objects.filter(organization=org).exists()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers: PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_an_event_committed_inside_a_batch_while_it_runs_keeps_its_terms(monkeypatch):
    from audit import retention

    org = Organization.objects.create(name="Late", plan=Plan.objects.get(key="guard-premium"))
    old = NOW - RETENTION - timedelta(days=1)
    context = [item("group", 1, "Admins")]
    first, last = (record(org, old + timedelta(minutes=m), context=context) for m in (0, 10))
    events_delete, late = retention._events_delete, []

    def meanwhile(cursor, ids):
        # After the batch was read, another session commits an event in its range.
        late.extend(in_threads(lambda: record(org, old, context=context).pk))
        return events_delete(cursor, ids)

    monkeypatch.setattr(retention, "_events_delete", meanwhile)
    result = audit_log_purge(now=NOW, batch_size=1000, pause=0, organizations=[org])
    assert result.events == 2
    assert ids(org) == set(late)
    terms = EventTerm.objects.filter(organization=org)
    assert list(terms.values_list("event_id", flat=True)) == late


def test_hourly_counts_lose_the_purged_events(org):
    hour = (NOW - RETENTION).replace(minute=0, second=0, microsecond=0)
    record(org, hour + timedelta(minutes=1))  # before the cutoff (12:30)
    record(org, hour + timedelta(minutes=40))  # after it: same hour, kept
    record(org, hour - timedelta(hours=3))  # an hour that empties entirely
    purge()
    counts = EventHourlyCount.objects.filter(organization=org, hour__lt=NOW)
    assert dict(counts.values_list("hour", "count")) == {hour: 1}
    totals = EventHourlyTotal.objects.filter(organization=org, hour__lt=NOW)
    assert dict(totals.values_list("hour", "count")) == {hour: 1}


def test_the_job_records_its_own_event_per_organization(org, other_org):
    for days in (181, 190, 200):
        record(org, NOW - timedelta(days=days))
    record(other_org, NOW - timedelta(days=1))
    purge()
    event = Event.objects.get(organization=org, action__key="audit_log_purged")
    assert event.actor_type == "system" and event.details == {"count": 3}
    assert event.message == "System removed 3 activities older than the retention period"
    assert not Event.objects.filter(organization=other_org, action__key="audit_log_purged")


def test_a_plan_without_the_audit_log_is_purged_without_an_event(org):
    record(org, NOW - timedelta(days=200))
    org.plan = Plan.objects.get(key="none")
    org.save()
    result = purge()
    assert ids(org) == set() and not Event.objects.filter(organization=org).exists()
    assert "does not include the organization audit log" in result.orgs[0].record_refusal


def test_a_plan_keeping_zero_days_is_not_read_as_erase_everything(org):
    org.plan.retention_days = 0
    org.plan.save()
    kept = record(org, NOW - timedelta(days=1))
    assert purge().events == 0 and ids(org) == {kept.pk}  # AUDIT_MIN_RETENTION_DAYS holds


def test_a_dry_run_counts_and_changes_nothing(org, admin, carol):
    kwargs = {"actor": Actor.for_user(admin), "context": [user_item(carol)]}
    for days in (181, 182):
        record(org, NOW - timedelta(days=days), **kwargs)
    before = (Event.objects.count(), EventTerm.objects.count(), EventHourlyCount.objects.count())
    result = purge(dry_run=True)
    assert result.dry_run and result.events == 2
    after = (Event.objects.count(), EventTerm.objects.count(), EventHourlyCount.objects.count())
    assert after == before


def test_the_command_purges_and_its_dry_run_only_tells(org, capsys):
    record(org, datetime.now(UTC) - timedelta(days=200))
    call_command("purge_audit_log", "--dry-run")
    out = capsys.readouterr().out
    assert "Acme: would remove 1 events older than" in out and "nothing was changed" in out
    assert len(ids(org)) == 1
    call_command("purge_audit_log")
    out = capsys.readouterr().out
    assert "Acme: removed 1 events" in out and "Removed 1 events in" in out
    assert ids(org) == set()


def test_a_deadline_stops_between_batches_and_a_run_always_makes_progress(org):
    for days in (181, 182, 183):
        record(org, NOW - timedelta(days=days))
    result = purge(batch_size=1, deadline=0)  # long past
    assert not result.complete and result.events == 1 and len(ids(org)) == 2


def test_the_daily_task_continues_until_done_when_its_time_runs_out(org, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 0}
    settings.AUDIT_PURGE_BATCH_SIZE = 1
    now = datetime.now(UTC)
    for days in (181, 182, 183):
        record(org, now - timedelta(days=days))
    from audit.tasks import audit_log_purge_daily

    audit_log_purge_daily()  # Q_SYNC: the continuations run in-process
    assert ids(org) == set()
    counts = Event.objects.filter(organization=org, action__key="audit_log_purged")
    assert sorted(e.details["count"] for e in counts) == [1, 1, 1]


# Batches: a long purge is many short transactions; the log stays readable between them.


def latest_page(org_id: int) -> list[int]:
    """The audit page's query: the newest 50 events of the organization, by the index."""
    return list(
        Event.objects.filter(organization_id=org_id)
        .order_by("-occurred_at", "-id")
        .values_list("pk", flat=True)[:50]
    )


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_a_large_purge_commits_batch_by_batch_and_the_page_reads_between(settings):
    org = Organization.objects.create(name="Big", plan=Plan.objects.get(key="guard-premium"))
    old = NOW - RETENTION - timedelta(days=1)
    specs = [
        EventSpec(action="group_created", occurred_at=old + timedelta(seconds=i))
        for i in range(25_000)
    ]
    recent = [
        EventSpec(action="group_created", occurred_at=NOW - timedelta(minutes=i)) for i in range(60)
    ]
    event_record_batch(organization=org, specs=specs + recent)
    newest = latest_page(org.pk)
    seen = []

    def between(progress):
        ((remaining, page),) = in_threads(
            lambda: (
                Event.objects.filter(
                    organization_id=org.pk, occurred_at__lt=progress.cutoff
                ).count(),
                latest_page(org.pk),
            )
        )
        seen.append((progress.events, remaining))
        assert page == newest

    result = audit_log_purge(now=NOW, batch_size=1000, pause=0, on_batch=between, max_share=1)
    assert result.orgs[0].batches >= 25 and result.events == 25_000
    # Another connection saw each batch committed on its own.
    assert seen == [(n, 25_000 - n) for n in range(1000, 25_001, 1000)]
    assert len(ids(org)) == 60
    assert not connection.in_atomic_block


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers: PostgreSQL")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_purges_at_once_remove_each_event_once_and_keep_the_counts_right():
    org = Organization.objects.create(name="Twice", plan=Plan.objects.get(key="guard-premium"))
    hour = (NOW - RETENTION).replace(minute=0, second=0, microsecond=0)
    expired = [hour - timedelta(minutes=m) for m in range(1, 200)]  # several hours
    kept = [hour + timedelta(minutes=31 + m) for m in range(20)]  # after the 12:30 cutoff
    specs = [EventSpec(action="group_created", occurred_at=at) for at in expired + kept]
    event_record_batch(organization=org, specs=specs)
    results = in_threads(
        lambda: audit_log_purge(now=NOW, batch_size=7, pause=0, organizations=[org]), 2
    )
    assert sum(r.events for r in results) == len(expired)
    assert len(ids(org)) == len(kept)
    counts = EventHourlyCount.objects.filter(organization=org, hour__lt=NOW)
    assert dict(counts.values_list("hour", "count")) == {hour: len(kept)}


def test_ingest_keys_claimed_before_any_plan_keeps_events_are_removed(org, jira):
    """The ingest's idempotency keys (IngestedEvent) go once no plan's retention could
    still hold their event: a resend before that is still a duplicate. Oldest first by
    id; a key claimed out of order waits for the keys before it."""
    Plan.objects.filter(pk=org.plan_id).update(retention_days=400)
    for n in range(5):
        IngestedEvent.objects.create(
            product=jira, external_id=f"old-{n}", claimed_at=NOW - timedelta(days=400, hours=n + 1)
        )
    IngestedEvent.objects.create(
        product=jira, external_id="kept", claimed_at=NOW - timedelta(days=399)
    )
    IngestedEvent.objects.create(
        product=jira, external_id="straggler", claimed_at=NOW - timedelta(days=401)
    )
    fresh = IngestedEvent.objects.create(product=jira, external_id="fresh")  # the database's now
    fresh.refresh_from_db()
    assert abs(fresh.claimed_at - timezone.now()) < timedelta(minutes=5)
    assert purge(dry_run=True).ingest_claims == 0
    assert purge(organizations=[org]).ingest_claims == 0  # only a run over every organization
    assert IngestedEvent.objects.count() == 8
    result = purge(batch_size=2)
    assert result.ingest_claims == 5 and result.summary()["ingest_claims"] == 5
    left = set(IngestedEvent.objects.values_list("external_id", flat=True))
    assert left == {"kept", "straggler", "fresh"}
    later = audit_log_purge(now=NOW + timedelta(days=2), pause=0, batch_size=2)
    assert later.ingest_claims == 2
    assert list(IngestedEvent.objects.values_list("external_id", flat=True)) == ["fresh"]


def test_a_retention_past_any_date_set_around_the_admin_stops_nothing(client, org, admin):
    """The admin refuses more than MAX_RETENTION_DAYS; a row edited around it (raw SQL)
    is read as that many days, rather than a cutoff before year 1 failing the job every
    day and the pages every time."""
    Plan.objects.filter(pk=org.plan_id).update(retention_days=10_000_000)
    old = record(org, NOW - timedelta(days=400))
    result = purge()
    assert result.complete and old.pk in ids(org)
    client.force_login(admin)
    assert client.get(reverse("audit:event-list", args=[org.pk])).status_code == 200
    detail = reverse("audit:event-detail", args=[org.pk, old.pk])
    assert client.get(detail).status_code == 200
