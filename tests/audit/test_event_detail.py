"""The event detail page: every field and the event's JSON in the API's shape."""

import json
import re
from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.services import Actor, event_record, item, user_item

from ..conftest import make_user


@pytest.fixture
def event(org, admin, confluence):
    bob = make_user("bo@acme.test", org, name="Bob Builder")
    return event_record(
        organization=org,
        action="page_viewed",
        actor=Actor.for_user(bob),
        product=confluence,
        context=[item("page", 42, "Q3 roadmap")],
        container=[item("space", 1, "Engineering")],
        ip="203.0.113.9",
        user_agent="Mozilla/5.0 Test",
        occurred_at=timezone.now() - timedelta(hours=1),
    ).event


def detail(event):
    return reverse("audit:event-detail", args=[event.organization_id, event.pk])


def test_it_shows_every_field_and_the_json(client, admin, event):
    client.force_login(admin)
    response = client.get(detail(event) + "?q=bo%40acme.test")
    assert response.status_code == 200
    body = response.content.decode()
    for text in (
        "Viewed page",
        "Bob Builder",
        "bo@acme.test",
        "Q3 roadmap",
        "Engineering",
        "Confluence",
        "203.0.113.9",
        "Mozilla/5.0 Test",
        "Copy JSON",
    ):
        assert text in body, text
    assert "?q=bo%40acme.test" in body  # back to the same filters
    raw = re.search(r'<pre class="json" id="event-json"[^>]*>(.*?)</pre>', body, re.S).group(1)
    data = json.loads(unescape(raw))
    assert data["id"] == str(event.pk)
    assert data["type"] == "events"
    assert set(data["attributes"]) == {
        "time",
        "action",
        "actor",
        "context",
        "container",
        "location",
    }
    assert data["attributes"]["action"] == "page_viewed"
    assert data["message"]["format"] == "simple"
    assert data["links"]["self"].startswith("http://testserver/admin/v1/orgs/")


def test_the_detail_of_another_orgs_event_is_404(client, outsider, other_org, event):
    client.force_login(outsider)
    # the outsider administers other_org; the event belongs to org
    url = reverse("audit:event-detail", args=[other_org.pk, event.pk])
    assert client.get(url).status_code == 404
    assert client.get(detail(event)).status_code == 404


def test_a_member_gets_403(client, member, event):
    client.force_login(member)
    assert client.get(detail(event)).status_code == 403


def test_an_event_past_retention_is_gone(client, admin, org):
    old = event_record(
        organization=org,
        action="group_created",
        context=[user_item(admin)],
        occurred_at=timezone.now() - timedelta(days=181),
    ).event
    client.force_login(admin)
    assert client.get(detail(old)).status_code == 404
