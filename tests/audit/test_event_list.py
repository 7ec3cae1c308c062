"""The audit log page: access, filters, time zones, paging, chart and query budget."""

from datetime import timedelta
from functools import partial

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import Event
from audit.services import SYSTEM, Actor, event_record, item, user_item
from orgs.models import Membership, Organization, Plan

from ..conftest import make_user, record
from ..conftest import url as org_url

url = partial(org_url, "audit:event-list")


@pytest.fixture
def signed_in(client, admin):
    client.force_login(admin)
    return client


# -- access -------------------------------------------------------------------------


def test_it_shows_the_page_to_the_orgs_admin(signed_in, org):
    record(org)
    response = signed_in.get(url(org))
    assert response.status_code == 200
    assert b"Audit log" in response.content
    assert b"Activities are kept for 180 days" in response.content
    assert response["Cache-Control"].startswith("max-age=0")


def test_it_sends_the_anonymous_to_sign_in(client, org):
    response = client.get(url(org))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("who", ["outsider", "staff"])
def test_it_hides_the_org_from_outsiders_and_staff(client, org, who, request):
    client.force_login(request.getfixturevalue(who))
    assert client.get(url(org)).status_code == 404


def test_an_admin_of_another_org_gets_404(client, org, other_org):
    client.force_login(make_user("ann@globex.test", other_org, Membership.Role.ADMIN))
    assert client.get(url(org)).status_code == 404


def test_a_member_who_is_not_admin_gets_403(client, org, member):
    client.force_login(member)
    assert client.get(url(org)).status_code == 403


def test_it_refuses_post(signed_in, org):
    assert signed_in.post(url(org)).status_code == 405


def test_an_org_without_the_audit_log_sees_which_plans_have_it(client, db):
    org = Organization.objects.create(name="Initech", plan=Plan.objects.get(key="none"))
    client.force_login(make_user("peter@initech.test", org, Membership.Role.ADMIN))
    response = client.get(url(org))
    assert response.status_code == 200
    body = response.content.decode()
    assert "The audit log isn't included in Initech's plan" in body
    for name in ("Guard Standard", "Guard Premium", "Cloud Enterprise"):
        assert name in body
    assert "event-table" not in body


# -- the table ----------------------------------------------------------------------


def test_it_lists_events_newest_first_with_every_column(signed_in, org, admin, jira):
    bob = make_user("bob@acme.test", org, name="Bob Builder")
    older = record(org, ago=timedelta(hours=3))
    newer = event_record(
        organization=org,
        action="group_member_added",
        actor=Actor.for_user(admin),
        context=[user_item(bob), item("group", 2, "site-admins")],
        product=jira,
        ip="203.0.113.9",
        occurred_at=timezone.now() - timedelta(hours=1),
    ).event
    body = signed_in.get(url(org)).content.decode()
    assert body.index(newer.message) < body.index(older.message)
    assert "Alice Admin" in body and "alice<wbr>@acme.test" in body
    assert "Added user to group" in body
    assert "Jira" in body and "acme.example.net" in body
    assert "203.0.113.9" in body


def test_it_names_the_system_and_api_tokens(signed_in, org):
    record(org, actor=SYSTEM)
    record(org, "api_token_used", actor=Actor.for_token(7, "ci-token-1"), context=[])
    body = signed_in.get(url(org)).content.decode()
    assert ">System<" in body
    assert "ci-token-1" in body


def test_it_shows_times_in_the_viewers_time_zone(client, org, admin):
    admin.time_zone = "Asia/Tokyo"
    admin.save()
    client.force_login(admin)
    when = timezone.now().replace(hour=23, minute=30, second=0, microsecond=0) - timedelta(days=1)
    event_record(organization=org, action="group_created", occurred_at=when)
    body = client.get(url(org)).content.decode()
    local = when.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    assert f"{local.day} {local:%b %Y, %H:%M:%S}" in body
    assert "Date and time (Asia/Tokyo)" in body


def test_old_events_past_retention_never_show(signed_in, org):
    old = record(org, ago=timedelta(days=200))
    body = signed_in.get(url(org, range="custom", **{"from": "2000-01-01"})).content.decode()
    assert old.message not in body or "Activities are kept for 180 days, so" in body
    assert f"/events/{old.pk}/" not in body


# -- filters ------------------------------------------------------------------------


def test_it_searches_an_exact_email(signed_in, org):
    carol = make_user("carol@acme.test", org, name="Carol Jones")
    hit = record(org, "group_member_added", context=[user_item(carol), item("group", 1, "eng")])
    miss = record(org, "group_created", context=[item("group", 2, "marketing")])
    body = signed_in.get(url(org, q=" Carol@Acme.test ")).content.decode()
    assert f"/events/{hit.pk}/" in body
    assert f"/events/{miss.pk}/" not in body


def test_a_search_without_results_says_what_was_searched(signed_in, org):
    record(org)
    response = signed_in.get(url(org, q="carol"))
    body = response.content.decode()
    assert response.status_code == 200
    assert "No activities match “carol”" in body
    assert "whole values only" in body


def test_it_filters_by_activity_and_date_range_together(signed_in, org):
    keep = record(org, "group_deleted", ago=timedelta(days=20))
    wrong_action = record(org, "group_created", ago=timedelta(days=20))
    too_old = record(org, "group_deleted", ago=timedelta(days=40))
    body = signed_in.get(url(org, range="30d", action=["group_deleted"])).content.decode()
    assert f"/events/{keep.pk}/" in body
    assert f"/events/{wrong_action.pk}/" not in body
    assert f"/events/{too_old.pk}/" not in body


def test_search_activity_and_custom_dates_combine(signed_in, org):
    today = timezone.now().date()
    hit = record(org, "group_deleted", ago=timedelta(hours=1))
    record(org, "group_created", ago=timedelta(hours=1))
    params = {"q": "engineering", "action": ["group_deleted"], "from": str(today), "to": str(today)}
    body = signed_in.get(url(org, **params)).content.decode()
    assert body.count("/events/") == 1
    assert f"/events/{hit.pk}/" in body


def test_the_activity_filter_offers_only_what_the_plan_covers(client, db):
    org = Organization.objects.create(name="S", plan=Plan.objects.get(key="guard-standard"))
    client.force_login(make_user("sam@s.test", org, Membership.Role.ADMIN))
    body = client.get(url(org)).content.decode()
    assert 'value="group_created"' in body
    assert 'value="page_viewed"' not in body
    assert "<legend>Groups</legend>" in body


@pytest.mark.parametrize(
    "params,message",
    [
        ({"from": "not-a-date"}, "Enter a date as YYYY-MM-DD"),
        ({"from": "2026-11-10", "to": "2026-11-01"}, "The end date is before the start date."),
        ({"action": "nope"}, "Unknown activity “nope”"),
        ({"q": "x" * 201}, "at most 200 characters"),
        ({"range": "forever"}, "Choose a date range from the list."),
    ],
)
def test_bad_input_shows_what_is_wrong(signed_in, org, params, message):
    response = signed_in.get(url(org, **params))
    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_api_filters_work_in_a_link_too(signed_in, org, admin):
    mine = record(org, actor=Actor.for_user(admin), ip="203.0.113.9")
    other = record(org, ip="203.0.113.10")
    body = signed_in.get(url(org, actor="ALICE@acme.test", ip="203.0.113.9")).content.decode()
    assert f"/events/{mine.pk}/" in body and f"/events/{other.pk}/" not in body
    assert "ip=203.0.113.9" in body  # kept in the links to the event
    response = signed_in.get(url(org, location="Berlin"))
    assert response.status_code == 400
    assert "Location: Give locations as a JSON array" in response.content.decode()


def test_repeated_parameters_are_an_error_not_a_guess(signed_in, org):
    response = signed_in.get(url(org) + "?q=a&q=b")
    assert response.status_code == 400
    assert "Give this only once" in response.content.decode()


# -- paging ---------------------------------------------------------------------------


def _page_ids(body: str) -> list[int]:
    import re

    return [int(n) for n in re.findall(r"/audit-log/events/(\d+)/", body)]


def test_paging_forward_and_back_without_gaps_or_repeats(signed_in, org, settings):
    settings.AUDIT_PAGE_SIZE = 4
    when = timezone.now() - timedelta(hours=2)
    for _ in range(10):  # ten events in one instant, then a few spread out
        event_record(organization=org, action="group_created", occurred_at=when)
    for n in range(3):
        record(org, ago=timedelta(minutes=n + 1))
    expected = list(
        Event.objects.filter(organization=org)
        .order_by("-occurred_at", "-id")
        .values_list("pk", flat=True)
    )
    import re

    seen, pages, link = [], [], url(org)
    while link:
        body = signed_in.get(link).content.decode()
        ids = _page_ids(body)
        pages.append((link, ids))
        seen += ids
        older = re.search(r'rel="next" href="([^"]+)"', body)
        link = url(org) + older.group(1).replace("&amp;", "&") if older else None
    assert seen == expected
    assert len(pages) == 4
    body = signed_in.get(pages[-1][0]).content.decode()
    newer = re.search(r'rel="prev" href="([^"]+)"', body).group(1).replace("&amp;", "&")
    assert _page_ids(signed_in.get(url(org) + newer).content.decode()) == pages[-2][1]


def test_a_tampered_cursor_gives_the_first_page_and_says_so(signed_in, org):
    event = record(org)
    response = signed_in.get(url(org, cursor="definitely-not-a-cursor"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "That page link is not valid" in body
    assert f"/events/{event.pk}/" in body


# -- chart, freshness, query budget ---------------------------------------------------


def test_the_chart_counts_activity_per_day(signed_in, org):
    for _ in range(3):
        record(org, ago=timedelta(days=2))
    record(org, "group_deleted", ago=timedelta(days=1))
    everything = Event.objects.filter(organization=org).count()  # signing in is recorded too
    body = signed_in.get(url(org)).content.decode()
    assert 'role="img"' in body
    assert f"{everything} activities ·" in body
    body = signed_in.get(url(org, action="group_deleted")).content.decode()
    assert "1 activity ·" in body
    body = signed_in.get(url(org, q="engineering")).content.decode()
    assert "4 activities ·" in body


def test_new_events_show_on_the_next_load(signed_in, org):
    signed_in.get(url(org))
    event = record(org, ago=timedelta(seconds=1))
    assert f"/events/{event.pk}/" in signed_in.get(url(org)).content.decode()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": "engineering"},
        {"action": ["group_created"]},
        {"action": ["group_created", "group_deleted", "group_renamed"]},
        {"q": "engineering", "action": ["group_created", "group_deleted"], "range": "180d"},
        {"range": "custom", "from": "2026-01-01", "to": "2026-12-31"},
        {"from": "bad"},
    ],
)
def test_the_page_needs_at_most_8_queries(signed_in, org, params, django_assert_max_num_queries):
    for n in range(60):
        record(org, "group_created" if n % 2 else "group_deleted", ago=timedelta(minutes=n))
    first = signed_in.get(url(org, **params))
    import re

    older = re.search(r'rel="next" href="\?([^"]+)"', first.content.decode())
    with django_assert_max_num_queries(8):
        signed_in.get(url(org, **params))
    if older:
        with django_assert_max_num_queries(8):
            signed_in.get(url(org) + "?" + older.group(1).replace("&amp;", "&"))


def test_what_events_hold_is_escaped_in_every_cell(signed_in, org, jira):
    hostile = '<script>alert("x")</script>&'
    event_record(
        organization=org,
        action="group_member_added",
        actor=Actor("user", "u1", hostile, 'a"<b>@evil.test'),
        product=jira,
        context=[item("group", 1, hostile), item("user", 2, hostile)],
        ip="203.0.113.9",
    )
    event_record(organization=org, action="group_created", actor=Actor("api_token", "7", hostile))
    page = signed_in.get(url(org, action="group_member_added")).content.decode()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page  # the actor's name
    assert "a&quot;&lt;b&gt;<wbr>@evil.test" in page  # the email, breakable before the @
    listed = signed_in.get(url(org)).content.decode()
    assert "<script>" not in listed and listed.count("&lt;script&gt;") >= 3
    refused = signed_in.get(url(org, action=["group_created", '"><b>nope']))
    assert refused.status_code == 400 and "<b>" not in refused.content.decode()
    assert 'value="group_created" checked' in refused.content.decode()
