"""Every endpoint of the REST API, v1 and v2: the happy path in the vendor's exact JSON."""

import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.urls import reverse

from audit.filters import plan_actions
from audit.services import Actor, Location, item, user_item

from ..conftest import make_user
from .conftest import record

VERSIONS = ["v1", "v2"]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


@pytest.fixture
def event(org, admin, confluence):
    bob = make_user("bo@acme.test", org, name="Bob Builder")
    return record(
        org,
        "page_viewed",
        actor=Actor.for_user(bob),
        product=confluence,
        context=[item("page", 42, "Q3 roadmap")],
        container=[item("space", 1, "Engineering")],
        ip="203.0.113.9",
        location=Location("Germany", "Berlin", "Berlin"),
        ago=timedelta(hours=1),
    )


def assert_event_shape(data: dict, event=None) -> None:
    assert set(data) == {"id", "type", "attributes", "message", "links"}
    assert data["type"] == "events"
    attributes = data["attributes"]
    assert set(attributes) - {"processedAt"} == {
        "time",
        "action",
        "actor",
        "context",
        "container",
        "location",
    }
    assert ISO_Z.match(attributes["time"]), attributes["time"]
    assert set(attributes["actor"]) == {"id", "name", "email", "links"}
    for one in attributes["context"] + attributes["container"]:
        assert set(one) == {"id", "type", "attributes", "links"}
    assert set(attributes["location"]) == {"ip", "geo", "countryName", "regionName", "city"}
    assert data["message"]["format"] == "simple" and set(data["message"]) == {"content", "format"}
    assert set(data["links"]) == {"self"}
    if event is not None:
        assert data["id"] == str(event.pk)
        assert data["links"]["self"] == (
            f"http://testserver/admin/v1/orgs/{event.organization_id}/events/{event.pk}"
        )


@pytest.mark.parametrize("version", VERSIONS)
def test_orgs_lists_the_keys_organization(api, org, other_org, version):
    body = api.json(f"/admin/{version}/orgs")
    assert body == {
        "data": [
            {
                "id": str(org.pk),
                "type": "orgs",
                "attributes": {"name": "Acme"},
                "relationships": {},
                "links": {"self": f"http://testserver/admin/{version}/orgs/{org.pk}"},
            }
        ],
        "links": {"self": f"http://testserver/admin/{version}/orgs"},
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_org_gives_one_organization(api, org, version):
    body = api.json(f"/admin/{version}/orgs/{org.pk}")
    assert body == {
        "data": {
            "id": str(org.pk),
            "type": "orgs",
            "attributes": {"name": "Acme"},
            "relationships": {},
            "links": {"self": f"http://testserver/admin/{version}/orgs/{org.pk}"},
        }
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_events_lists_events_in_the_vendor_shape(api, org, event, version):
    body = api.json(f"/admin/{version}/orgs/{org.pk}/events", {"action": "page_viewed"})
    assert set(body) == {"data", "meta", "links"}
    assert body["meta"] == {"page_size": 1}
    assert body["links"] == {
        "self": f"http://testserver/admin/{version}/orgs/{org.pk}/events?action=page_viewed"
    }
    (data,) = body["data"]
    assert_event_shape(data, event)
    assert data["attributes"] == {
        "time": event.occurred_at.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
        "action": "page_viewed",
        "actor": {
            "id": event.actor_id,
            "name": "Bob Builder",
            "email": "bo@acme.test",
            "links": {},
        },
        "context": [
            {"id": "42", "type": "page", "attributes": {"name": "Q3 roadmap"}, "links": {}}
        ],
        "container": [
            {"id": "1", "type": "space", "attributes": {"name": "Engineering"}, "links": {}}
        ],
        "location": {
            "ip": "203.0.113.9",
            "geo": "",
            "countryName": "Germany",
            "regionName": "Berlin",
            "city": "Berlin",
        },
    }
    assert data["message"] == {"content": event.message, "format": "simple"}
    assert event.message


def test_the_event_time_is_utc_with_z_whatever_the_server_zone(api, org, settings):
    settings.TIME_ZONE = "America/New_York"
    moment = datetime(2026, 11, 29, 23, 30, 15, 123456, tzinfo=UTC)
    one = record(org, occurred_at=moment)
    body = api.json(f"/admin/v1/orgs/{org.pk}/events/{one.pk}")
    assert body["data"]["attributes"]["time"] == "2026-11-29T23:30:15.123Z"


@pytest.mark.parametrize("version", VERSIONS)
def test_event_gives_one_event(api, org, event, version):
    body = api.json(f"/admin/{version}/orgs/{org.pk}/events/{event.pk}")
    assert set(body) == {"data"}
    assert_event_shape(body["data"], event)
    listed = api.json(f"/admin/{version}/orgs/{org.pk}/events", {"action": "page_viewed"})
    assert body["data"] == listed["data"][0]


@pytest.mark.parametrize("version", VERSIONS)
def test_event_actions_are_the_plans_catalogue(api, org, version):
    body = api.json(f"/admin/{version}/orgs/{org.pk}/event-actions")
    assert set(body) == {"data"}
    expected = [a.key for a in plan_actions(org.plan)]
    assert [one["id"] for one in body["data"]] == expected and expected
    for one in body["data"]:
        assert set(one) == {"id", "type", "attributes"}
        assert one["type"] == "event-actions"
        assert set(one["attributes"]) == {"displayName", "groupDisplayName"}
        assert one["attributes"]["displayName"] and one["attributes"]["groupDisplayName"]
    by_key = {one["id"]: one["attributes"] for one in body["data"]}
    assert by_key["group_member_added"]["displayName"] == "Added user to group"


def test_event_actions_follow_the_plan(client, db):
    from orgs.models import Organization, Plan
    from orgs.services import api_key_create

    from .conftest import ApiClient

    standard = Organization.objects.create(name="Std", plan=Plan.objects.get(key="guard-standard"))
    _, secret = api_key_create(organization=standard, name="k", days=1, by=None)
    keys = [
        a["id"]
        for a in ApiClient(client, secret).json(f"/admin/v1/orgs/{standard.pk}/event-actions")[
            "data"
        ]
    ]
    assert "group_created" in keys
    assert "page_viewed" not in keys  # user-created activity is Guard Premium's


@pytest.mark.parametrize("version", VERSIONS)
def test_v1_and_v2_give_the_same_events(api, org, event, version):
    v1 = api.json(f"/admin/v1/orgs/{org.pk}/events", {"limit": 2})
    v2 = api.json(f"/admin/v2/orgs/{org.pk}/events", {"limit": 2})
    assert v1["data"] == v2["data"]
    assert v1["meta"].keys() == v2["meta"].keys()


def test_the_detail_page_shows_the_apis_json(client, api, org, admin, event):
    response = api.get(f"/admin/v1/orgs/{org.pk}/events/{event.pk}")
    from_api = response.json()["data"]
    client.force_login(admin)
    page = client.get(reverse("audit:event-detail", args=[org.pk, event.pk]))
    assert page.status_code == 200
    raw = re.search(r'<pre[^>]*id="event-json"[^>]*>(.*?)</pre>', page.content.decode(), re.S)
    on_page = json.loads(unescape(raw.group(1)))
    path = f"/admin/v1/orgs/{org.pk}/events/{event.pk}"
    assert on_page["links"]["self"].endswith(path)
    assert from_api["links"]["self"].endswith(path)
    on_page["links"] = from_api["links"] = None
    assert on_page == from_api


def test_context_with_an_email_keeps_it(api, org, admin):
    carol = make_user("carol@acme.test", org, name="Carol Jones")
    one = record(org, "group_member_added", context=[user_item(carol), item("group", 3, "eng")])
    data = api.json(f"/admin/v1/orgs/{org.pk}/events/{one.pk}")["data"]
    assert data["attributes"]["context"][0] == {
        "id": str(carol.pk),
        "type": "user",
        "attributes": {"name": "Carol Jones", "email": "carol@acme.test"},
        "links": {},
    }
