"""The events endpoint's filters over HTTP, each in both directions: every event
returned matches, and no matching event is missing (tests/audit/test_filters.py holds
the selector-level semantics; this is the same truth through the query string)."""

from datetime import UTC, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from audit.models import Event
from audit.services import SYSTEM, Actor, Location, item

from ..conftest import event_matches
from .conftest import org_events, record

PLACES = [
    Location("Germany", "Berlin", "Berlin"),
    Location("Germany", "Bavaria", "Munich"),
    Location("United States", "Washington, D.C.", "Washington, D.C."),  # commas in names
    None,
]


@pytest.fixture
def varied(org, admin, jira, confluence):
    """36 events over every combination the filters tell apart, 1 to 36 hours old."""
    actors = [
        Actor.for_user(admin),
        Actor(Event.ActorType.USER, "ext-42", "Ext", "Mixed.Case@Example.COM"),
        Actor.for_token(7, "ci-token"),
        SYSTEM,
    ]
    ips = ["203.0.113.9", "2001:db8::1", None]
    products = [jira, confluence, None]
    actions = ["group_created", "group_deleted", "group_renamed"]
    now = timezone.now()
    for n in range(36):
        record(
            org,
            actions[n % 3],
            occurred_at=now - timedelta(hours=n + 1),
            actor=actors[n % 4],
            ip=ips[n % 3],
            product=products[(n // 3) % 3],
            location=PLACES[(n // 2) % 4],
            context=[item("group", 1, "zeta-team" if n % 5 == 2 else "other-team")],
        )
    return {"admin": admin, "jira": jira, "now": now}


def every_page(api, org, params: dict, limit: int = 5, version: str = "v1") -> list[int]:
    """The ids of every page the API gives for `params`, following meta.next."""
    ids, cursor = [], None
    for _ in range(100):
        body = api.json(
            f"/admin/{version}/orgs/{org.pk}/events",
            {**params, "limit": limit, **({"cursor": cursor} if cursor else {})},
        )
        ids += [int(one["id"]) for one in body["data"]]
        cursor = body["meta"].get("next")
        if not cursor:
            return ids
    raise AssertionError("more than 100 pages")


def cases(varied) -> list[dict]:
    admin, jira = varied["admin"], varied["jira"]
    return [
        {"q": "zeta-team"},
        {"q": "  ZETA-team "},
        {"action": ["group_deleted"]},
        {"action": ["group_created", "group_renamed"]},
        {"actor": [str(admin.pk)]},
        {"actor": ["ALICE@acme.test", "mixed.case@example.com"]},
        {"actor": ["7", "nobody@acme.test"]},
        {"ip": ["203.0.113.9"]},
        {"ip": ["2001:DB8:0::1", "203.0.113.9"]},
        {"product": ["jira"]},
        {"product": [str(jira.pk), "confluence"]},
        {"location": '[{"city": "Berlin", "countryName": "Germany"}]'},
        {"location": '[{"countryName": "Germany"}, {"city": "Munich"}]'},
        {"location": '[{"city": "Washington, D.C.", "regionName": "Washington, D.C."}]'},
        {"actor": [str(admin.pk)], "ip": ["203.0.113.9"], "product": ["jira"]},
        {"q": "zeta-team", "action": ["group_created", "group_deleted"], "ip": ["2001:db8::1"]},
        {"location": '[{"countryName": "Germany"}]', "actor": ["7"], "action": ["group_created"]},
    ]


def test_every_filter_returns_all_its_matches_and_only_them(api, org, varied):
    api.json("/admin/v1/orgs")  # the key's first use is an event too (api_token_used)
    everything = Event.objects.filter(organization=org).select_related("action")
    for params in cases(varied):
        expected = [
            e.pk
            for e in sorted(everything, key=lambda e: (e.occurred_at, e.pk), reverse=True)
            if event_matches(e, params)
        ]
        assert expected, params  # no vacuous pass
        assert len(expected) < everything.count(), params  # the filter narrows
        assert every_page(api, org, params) == expected, params
        # v2 and one big page agree
        assert every_page(api, org, params, limit=500, version="v2") == expected, params


def test_repeated_actor_and_action_are_or_within_and_and_across(api, org, varied):
    admin = varied["admin"]
    one = every_page(api, org, {"actor": [str(admin.pk)]}, limit=100)
    two = every_page(api, org, {"actor": ["ext-42"]}, limit=100)
    both = every_page(api, org, {"actor": [str(admin.pk), "ext-42"]}, limit=100)
    assert one and two and sorted(both) == sorted(one + two)
    response = api.get(f"/admin/v1/orgs/{org.pk}/events?actor={admin.pk}&actor=ext-42&limit=100")
    assert [int(e["id"]) for e in response.json()["data"]] == both


def test_a_location_with_commas_is_one_place_not_split(api, org, varied):
    place = '[{"city": "Washington, D.C."}]'
    body = api.json(f"/admin/v1/orgs/{org.pk}/events", {"location": place, "limit": 500})
    assert body["data"]
    assert {e["attributes"]["location"]["city"] for e in body["data"]} == {"Washington, D.C."}
    # The next link carries it whole too.
    body = api.json(f"/admin/v1/orgs/{org.pk}/events", {"location": place, "limit": 2})
    assert parse_qs(urlsplit(body["links"]["next"]).query)["location"] == [place]


@pytest.mark.parametrize("form", ["epoch_ms", "iso_z", "iso_offset", "iso_ms"])
def test_from_and_to_select_the_window_in_every_notation(api, org, varied, form):
    now = varied["now"]
    start, end = now - timedelta(hours=10, minutes=30), now - timedelta(hours=4, minutes=30)

    def write(moment):
        moment = moment.replace(microsecond=0)
        if form == "epoch_ms":
            return str(int(moment.timestamp() * 1000))
        if form == "iso_z":
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if form == "iso_ms":
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")

    start, end = start.replace(microsecond=0), end.replace(microsecond=0)
    expected = org_events(org, lambda e: start <= e.occurred_at < end)
    assert len(expected) == 6  # 5 to 10 hours old
    assert every_page(api, org, {"from": write(start), "to": write(end)}) == expected
    # Each bound alone, in both directions.
    older = org_events(org, lambda e: e.occurred_at < end)
    assert every_page(api, org, {"to": write(end)}, limit=50) == older
    newer = org_events(org, lambda e: e.occurred_at >= start)
    assert every_page(api, org, {"from": write(start)}, limit=50) == newer


def test_from_is_inclusive_and_to_exclusive_to_the_millisecond(api, org, varied):
    moment = varied["now"].replace(microsecond=0) - timedelta(minutes=1)
    exact = record(org, occurred_at=moment)
    ms = str(int(moment.timestamp() * 1000))
    ids = every_page(api, org, {"from": ms, "to": str(int(ms) + 1)})
    assert ids == [exact.pk]
    assert exact.pk not in every_page(api, org, {"to": ms}, limit=100)
