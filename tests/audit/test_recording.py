from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from audit.models import ActivitySetting, Event, EventHourlyCount, EventHourlyTotal, EventTerm
from audit.recording import term_hash
from audit.services import (
    Actor,
    EventSpec,
    Location,
    event_record,
    event_record_batch,
    item,
    user_item,
)
from tests.conftest import make_user, term_hashes


def terms_of(event: Event) -> set[int]:
    """The hashes of the event's term rows (compare with `hashed`)."""
    return term_hashes(event.pk)


def hashed(*terms: str) -> set[int]:
    return {term_hash(t) for t in terms}


def test_it_records_an_event_with_names_copied_and_message_rendered(org, admin, site):
    target = make_user("carol@acme.test", org, name="Carol Jones")
    before = timezone.now()
    result = event_record(
        organization=org,
        action="group_member_added",
        actor=Actor.for_user(admin),
        context=[user_item(target), item("group", 7, "Engineering")],
        container=[item("site", site.pk, site.name)],
        site=site,
        ip="203.0.113.9",
        user_agent="pytest",
        location=Location("Australia", "NSW", "Sydney"),
    )
    assert result.recorded and result.reason == ""
    event = Event.objects.get(pk=result.event.pk)
    assert event.message == "Alice Admin added Carol Jones to group Engineering"
    assert (event.actor_type, event.actor_name, event.actor_email) == (
        "user",
        "Alice Admin",
        "alice@acme.test",
    )
    assert event.action.key == "group_member_added" and event.action.category == "groups"
    assert event.site_name == "acme.example.net"
    assert (event.ip, event.user_agent, event.country, event.city) == (
        "203.0.113.9",
        "pytest",
        "Australia",
        "Sydney",
    )
    assert before <= event.recorded_at <= timezone.now()
    assert event.occurred_at == event.recorded_at


def test_occurred_at_is_kept_to_the_microsecond(org, admin):
    when = datetime(2026, 11, 1, 12, 30, 45, 123456, tzinfo=UTC)
    result = event_record(
        organization=org, action="user_logged_in", actor=Actor.for_user(admin), occurred_at=when
    )
    assert Event.objects.get(pk=result.event.pk).occurred_at == when


def test_json_fields_read_back_as_json_loads_reads_them(org, admin):
    """The JSON columns are read by orjson (TrustedJSONField), falling back to json.loads
    for what orjson refuses: both give back what was recorded, whatever its shape."""
    details = {
        "text": "Zoë's «page» 🚀 \u2028 \\ \"",
        "float": 0.1 + 0.2,
        "small": 1e-300,
        "int": 2**63 - 1,
        "past 64 bits": 2**70,
        "nested": [{"a": [None, True, False]}, []],
    }
    result = event_record(
        organization=org, action="user_logged_in", actor=Actor.for_user(admin), details=details
    )
    event = Event.objects.get(pk=result.event.pk)
    assert event.details == details and type(event.details["past 64 bits"]) is int
    assert Event.objects.filter(pk=event.pk).values_list("details", flat=True)[0] == details


def test_names_and_emails_survive_deleting_the_account(org, admin):
    target = make_user("dave@acme.test", org, name="Dave Gone")
    result = event_record(
        organization=org,
        action="user_invited",
        actor=Actor.for_user(admin),
        context=[user_item(target)],
    )
    target_id = str(target.pk)
    admin.delete()
    target.delete()
    event = Event.objects.get(pk=result.event.pk)
    assert event.actor_name == "Alice Admin" and event.actor_email == "alice@acme.test"
    assert event.context == [
        {"type": "user", "id": target_id, "name": "Dave Gone", "email": "dave@acme.test"}
    ]
    assert "Dave Gone" in event.message


def test_it_fills_exact_search_terms_lower_cased_and_trimmed(org, admin, site):
    target = make_user("Erin.Smith@Acme.test", org, name="  Erin Smith ")
    result = event_record(
        organization=org,
        action="group_member_added",
        actor=Actor.for_user(admin),
        site=site,
        context=[user_item(target), item("group", 1, "Site-Admins"), item("page", 2, "Secret")],
    )
    assert terms_of(result.event) == hashed(
        "alice admin",
        "alice@acme.test",
        "erin smith",
        "erin.smith@acme.test",
        "site-admins",
        "acme.example.net",
    )
    term = EventTerm.objects.get(event_id=result.event.pk, term_hash=term_hash("site-admins"))
    assert term.occurred_at == result.event.occurred_at and term.organization_id == org.pk


def test_system_and_token_actors_are_not_search_terms(org):
    result = event_record(
        organization=org,
        action="api_token_used",
        actor=Actor.for_token(5, "ci-token"),
        context=[item("token", 5, "ci-token")],
    )
    assert terms_of(result.event) == set()
    assert result.event.message == "API token ci-token was used from an ip"


def test_content_is_stored_by_default(org, admin, confluence):
    result = event_record(
        organization=org,
        action="page_viewed",
        actor=Actor.for_user(admin),
        product=confluence,
        context=[item("page", 42, "Q3 plan")],
        container=[item("space", 1, "Engineering")],
    )
    event = Event.objects.get(pk=result.event.pk)
    assert event.content == "Q3 plan"
    assert event.context == [{"type": "page", "id": "42", "name": "Q3 plan"}]
    assert event.message == "Alice Admin viewed Q3 plan in Engineering"


def test_not_stored_drops_the_content_but_records_the_event(org, admin, jira, confluence):
    ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    result = event_record(
        organization=org,
        action="issue_edited",
        actor=Actor.for_user(admin),
        product=jira,
        context=[item("issue", 9, "ENG-12")],
    )
    event = Event.objects.get(pk=result.event.pk)
    assert event.content == ""
    assert event.context == [{"type": "issue"}]
    assert event.message == "Alice Admin edited an issue"
    assert term_hash("eng-12") not in terms_of(event)
    # The setting is per product: Confluence still stores.
    other = event_record(
        organization=org,
        action="page_created",
        actor=Actor.for_user(admin),
        product=confluence,
        context=[item("page", 1, "Roadmap")],
    )
    assert other.event.content == "Roadmap"


def test_events_recorded_before_a_setting_change_keep_their_content(org, admin, jira):
    before = event_record(
        organization=org,
        action="issue_viewed",
        actor=Actor.for_user(admin),
        product=jira,
        context=[item("issue", 1, "ENG-1")],
    )
    ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    after = event_record(
        organization=org,
        action="issue_viewed",
        actor=Actor.for_user(admin),
        product=jira,
        context=[item("issue", 1, "ENG-1")],
    )
    assert Event.objects.get(pk=before.event.pk).content == "ENG-1"
    assert Event.objects.get(pk=after.event.pk).content == ""


def test_batch_applies_the_same_rules_and_reports_what_it_skipped(org, admin, jira):
    org.plan = type(org.plan).objects.get(key="guard-standard")
    org.save()
    now = timezone.now()
    specs = [
        EventSpec(
            "group_created",
            Actor.for_user(admin),
            now - timedelta(hours=2),
            context=[item("group", 1, "devs")],
        ),
        EventSpec(
            "issue_viewed",
            Actor.for_user(admin),
            now,
            product=jira,
            context=[item("issue", 1, "ENG-1")],
        ),
        EventSpec("user_logged_in", Actor.for_user(admin), now - timedelta(minutes=5)),
    ]
    result = event_record_batch(organization=org, specs=specs)
    assert result.recorded == 2
    assert result.skipped == [(1, "The Guard Standard plan does not record user-created activity.")]
    events = list(Event.objects.filter(id__in=result.event_ids).order_by("id"))
    assert [e.action.key for e in events] == ["group_created", "user_logged_in"]
    assert term_hash("devs") in terms_of(events[0])


def test_batch_ids_match_the_rows_they_were_given(org, admin):
    now = timezone.now()
    specs = [
        EventSpec(
            "group_created",
            Actor.for_user(admin),
            now - timedelta(seconds=i),
            context=[item("group", i, f"group-{i}")],
        )
        for i in range(1200)
    ]
    result = event_record_batch(organization=org, specs=specs)
    by_id = {e.pk: e for e in Event.objects.filter(id__in=result.event_ids)}
    assert [by_id[i].context[0]["name"] for i in result.event_ids] == [
        f"group-{i}" for i in range(1200)
    ]


def test_hourly_counts_follow_the_events(org, admin):
    hour = datetime(2026, 11, 2, 10, tzinfo=UTC)
    for minute in (1, 2, 59):
        event_record(
            organization=org,
            action="user_logged_in",
            actor=Actor.for_user(admin),
            occurred_at=hour + timedelta(minutes=minute),
        )
    event_record(
        organization=org,
        action="user_logged_in",
        actor=Actor.for_user(admin),
        occurred_at=hour + timedelta(hours=1),
    )
    counts = {(c.hour, c.count) for c in EventHourlyCount.objects.filter(organization=org)}
    assert counts == {(hour, 3), (hour + timedelta(hours=1), 1)}
    totals = {(t.hour, t.count) for t in EventHourlyTotal.objects.filter(organization=org)}
    assert totals == {(hour, 3), (hour + timedelta(hours=1), 1)}


def test_an_unknown_action_is_a_programming_error(org):
    with pytest.raises(ValueError, match="Unknown activity 'no_such_thing'"):
        event_record(organization=org, action="no_such_thing")


def test_naive_times_are_refused(org):
    with pytest.raises(ValueError, match="timezone-aware"):
        event_record(organization=org, action="user_logged_in", occurred_at=datetime(2026, 1, 1))


def test_the_single_and_batch_paths_write_the_same_rows(org, admin, jira, confluence, site):
    ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    when = datetime(2026, 11, 3, 9, 15, 0, tzinfo=UTC)
    specs = [
        EventSpec(
            "issue_edited",
            Actor.for_user(admin),
            when,
            product=jira,
            context=[item("issue", 9, "ENG-12")],
            ip="203.0.113.9",
        ),
        EventSpec(
            "page_viewed",
            Actor.for_user(admin),
            when,
            product=confluence,
            context=[item("page", 4, "Roadmap")],
            container=[item("space", 1, "Engineering")],
            details={"count": 3},
            location=Location("Australia", "NSW", "Sydney"),
        ),
        EventSpec("group_created", Actor(), when, site=site, context=[item("group", 1, "ops")]),
    ]
    batch = event_record_batch(organization=org, specs=specs)
    singles = [
        event_record(
            organization=org,
            action=s.action,
            actor=s.actor,
            occurred_at=s.occurred_at,
            product=s.product,
            site=s.site,
            context=s.context,
            container=s.container,
            details=s.details,
            ip=s.ip,
            location=s.location,
        ).event.pk
        for s in specs
    ]

    def rows(ids):
        fields = [  # the hash covers recorded_at too
            f.attname
            for f in Event._meta.concrete_fields
            if f.name not in ("id", "recorded_at", "hash")
        ]
        return [(Event.objects.values(*fields).get(pk=i), terms_of(Event(pk=i))) for i in ids]

    assert rows(batch.event_ids) == rows(singles)
    assert rows(singles)[0][0]["content"] == "" and rows(singles)[1][0]["content"] == "Roadmap"


def test_a_single_event_without_content_does_not_read_the_activity_settings(
    org, admin, jira, django_assert_num_queries
):
    event_record(organization=org, action="user_logged_in", actor=Actor.for_user(admin))
    # No product, or a product but nothing the setting could drop: no settings query.
    # savepoint, event, terms, hourly count, hourly total, release
    with django_assert_num_queries(6):
        event_record(
            organization=org,
            action="user_product_access_granted",
            actor=Actor.for_user(admin),
            product=jira,
            context=[item("user", 1, "Bob")],
        )


def test_hourly_totals_add_up_every_activity_of_the_hour(org, admin):
    hour = datetime(2026, 11, 3, 8, tzinfo=UTC)
    specs = [
        EventSpec(action, Actor.for_user(admin), hour + timedelta(minutes=minute))
        for action, minute in [("user_logged_in", 1), ("user_logged_out", 2), ("group_created", 3)]
    ]
    specs.append(EventSpec("group_created", Actor.for_user(admin), hour + timedelta(hours=2)))
    event_record_batch(organization=org, specs=specs)
    totals = dict(EventHourlyTotal.objects.filter(organization=org).values_list("hour", "count"))
    assert totals == {hour: 3, hour + timedelta(hours=2): 1}
    per_action = EventHourlyCount.objects.filter(organization=org, hour=hour)
    assert sorted(per_action.values_list("count", flat=True)) == [1, 1, 1]
