"""The emails and names an activity's change shows (old -> new) are search terms like
the names of its context, and the retention purge removes them with the event."""

from datetime import UTC, datetime, timedelta

import pytest

from audit.filters import EventFilter
from audit.models import EventTerm
from audit.recording import term_hash
from audit.retention import audit_log_purge
from audit.selectors import event_list
from audit.services import Actor, EventSpec, event_record, event_record_batch, item, user_item
from tests.conftest import make_user, term_hashes

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
OLD, NEW = "old.address@acme.test", "new.address@acme.test"


@pytest.fixture
def dana(org):
    return make_user(NEW, org, name="Dana Scully")


def found(org, q: str) -> list[int]:
    return [
        e.pk for e in event_list(filters=EventFilter({"q": q, "range": "30d"}, org=org, now=NOW))
    ]


def email_changed(dana) -> dict:
    return {
        "action": "user_email_changed",
        "actor": Actor.for_user(dana),
        "context": [user_item(dana)],
        "details": {"old": OLD, "new": NEW},
        "occurred_at": NOW - timedelta(hours=1),
    }


def terms_of(event_id: int) -> set[int]:
    """The event's term rows, as the hashes of the terms `hashed` names."""
    return term_hashes(event_id)


def hashed(*terms: str) -> set[int]:
    return {term_hash(t) for t in terms}


def test_an_email_change_is_found_by_both_addresses(org, dana):
    event = event_record(organization=org, **email_changed(dana)).event
    assert event.message == f"Dana Scully changed their email from {OLD} to {NEW}"
    for q in (OLD, NEW, " Old.Address@ACME.test "):
        assert found(org, q) == [event.pk], q


def test_batch_recording_derives_the_same_terms(org, dana):
    single = event_record(organization=org, **email_changed(dana)).event
    (batched,) = event_record_batch(
        organization=org, specs=[EventSpec(**email_changed(dana))]
    ).event_ids
    assert terms_of(batched) == terms_of(single) and term_hash(OLD) in terms_of(batched)


def test_a_renamed_groups_old_name_is_a_search_term(org, admin):
    event = event_record(
        organization=org,
        action="group_renamed",
        actor=Actor.for_user(admin),
        context=[item("group", 4, "Platform")],
        details={"old": "Infrastructure"},
        occurred_at=NOW - timedelta(hours=1),
    ).event
    assert event.message == "Alice Admin renamed group Infrastructure to Platform"
    assert found(org, "infrastructure") == [event.pk] == found(org, "platform")


def test_changes_that_are_not_names_are_not_search_terms(org, admin, jira, member):
    event_record(
        organization=org,
        action="activity_settings_updated",
        actor=Actor.for_user(admin),
        product=jira,
        details={"old": "Stored", "new": "Not stored"},
    )
    event_record(
        organization=org,
        action="org_member_role_changed",
        actor=Actor.for_user(admin),
        context=[user_item(member)],
        details={"old": "member", "new": "admin"},
    )
    terms = set(EventTerm.objects.values_list("term_hash", flat=True))
    assert not terms & hashed("stored", "not stored", "member", "admin")


def test_a_change_value_that_is_not_text_or_too_long_is_no_term(org, dana):
    kwargs = email_changed(dana) | {"details": {"old": 42, "new": "x" * 201 + "@acme.test"}}
    event = event_record(organization=org, **kwargs).event
    assert terms_of(event.pk) == hashed("dana scully", NEW)  # the actor's own name and email


def test_the_purge_leaves_no_term_of_a_change_behind(org, dana, caplog):
    kwargs = email_changed(dana) | {"occurred_at": NOW - timedelta(days=200)}
    old = event_record(organization=org, **kwargs).event
    group = event_record(
        organization=org,
        action="group_renamed",
        context=[item("group", 4, "Platform")],
        details={"old": "Infrastructure"},
        occurred_at=NOW - timedelta(days=200),
    ).event
    assert term_hash(OLD) in terms_of(old.pk) and term_hash("infrastructure") in terms_of(group.pk)
    result = audit_log_purge(now=NOW, pause=0)
    assert result.events == 2
    assert not EventTerm.objects.filter(event_id__in=[old.pk, group.pk]).exists()
    assert result.orgs[0].terms == 3 + 2  # dana's name, both addresses; both group names
    assert "search terms expected" not in caplog.text
