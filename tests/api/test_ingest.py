"""POST /ingest/v1/events: a product's events, each recorded once, through the one
recording service, into the ingest key's product and organization."""

import itertools
import json
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from audit.models import ActivitySetting, Event, EventTerm, IngestedEvent
from audit.recording import term_hash
from orgs.models import Product, Site
from orgs.services import api_key_create, ingest_key_create, ingest_key_revoke

from ..conftest import in_threads, plan
from .conftest import live_api_start, live_api_stop
from .test_rate_limit import WINDOW, assert_rate_headers, steady_window

URL = "/ingest/v1/events"


@pytest.fixture
def ingest_secret(jira) -> str:
    return ingest_key_create(product=jira, name="Jira webhook", by=None)[1]


def post(client: Client, secret: str | None, body, **headers):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return client.post(URL, data, content_type="application/json", headers=headers)


def event(external_id: str, action: str = "group_created", ago=timedelta(minutes=1), **extra):
    body = {
        "id": external_id,
        "time": (timezone.now() - ago).isoformat(),
        "action": action,
        "actor": {"type": "user", "id": "u-7", "name": "Dana Dev", "email": "dana@acme.test"},
        "context": [{"type": "group", "id": "g1", "name": "engineering"}],
    }
    return {**body, **extra}


def ingest(client, secret, events, status: int = 200) -> list[dict]:
    response = post(client, secret, {"events": events})
    assert response.status_code == status, response.content[:800]
    return response.json()["results"] if status == 200 else response.json()["errors"]


def test_it_records_each_event_in_the_keys_product_and_the_api_lists_them(
    client, api, org, jira, ingest_secret
):
    before = Event.objects.count()
    results = ingest(
        client,
        ingest_secret,
        [
            event("a1", ip="203.0.113.9", userAgent="jira/10", location={"city": "Berlin"}),
            event("a2", actor={"type": "system"}),
        ],
    )
    assert [(r["id"], r["status"]) for r in results] == [("a1", "recorded"), ("a2", "recorded")]
    first = Event.objects.get(pk=results[0]["eventId"])
    assert (first.organization_id, first.product_id, first.product_kind) == (
        org.pk,
        jira.pk,
        "jira",
    )
    assert (first.actor_type, first.actor_name, first.ip, first.city) == (
        "user",
        "Dana Dev",
        "203.0.113.9",
        "Berlin",
    )
    assert Event.objects.get(pk=results[1]["eventId"]).actor_type == Event.ActorType.SYSTEM
    assert Event.objects.count() == before + 2
    assert EventTerm.objects.filter(
        event_id=first.pk, term_hash=term_hash("dana@acme.test")
    ).exists()
    listed = api.json(f"/admin/v1/orgs/{org.pk}/events", {"q": "engineering"})
    assert {e["id"] for e in listed["data"]} == {results[0]["eventId"], results[1]["eventId"]}


def test_the_same_batch_twice_answers_duplicates_and_records_nothing_new(
    client, org, ingest_secret
):
    batch = [event("b1"), event("b2")]
    first = ingest(client, ingest_secret, batch)
    count, claimed = Event.objects.count(), IngestedEvent.objects.count()
    again = ingest(client, ingest_secret, batch)
    assert [r["status"] for r in again] == ["duplicate", "duplicate"]
    assert [r["eventId"] for r in again] == [r["eventId"] for r in first]
    assert (Event.objects.count(), IngestedEvent.objects.count()) == (count, claimed)


def test_a_mixed_batch_answers_each_event_in_order(client, org, ingest_secret):
    org.plan = plan("guard-standard")  # no user-created activity
    org.save()
    page = [{"type": "page", "id": "p1", "name": "Roadmap"}]
    results = ingest(
        client,
        ingest_secret,
        [
            event("m1"),
            event("m2", actor={"type": "robot", "id": "r"}),
            event("m3", action="page_created", context=page),
            event("m1"),
            {"action": "group_created"},
            event("m4", action="no_such_action"),
        ],
    )
    assert [r["status"] for r in results] == [
        "recorded",
        "invalid",
        "not_recorded",
        "duplicate",
        "invalid",
        "invalid",
    ]
    assert results[3]["eventId"] == results[0]["eventId"]
    assert results[1]["errors"] == {"actor.type": "Input should be 'user', 'api_token' or 'system'"}
    assert results[2]["reason"] == "The Guard Standard plan does not record user-created activity."
    assert "id" not in results[4] and results[4]["errors"]["id"] == "Field required"
    assert results[5]["errors"] == {"action": "Unknown action 'no_such_action'"}
    assert list(IngestedEvent.objects.values_list("external_id", flat=True)) == ["m1"]
    # Refused by the plan: nothing kept, so once the plan covers it, it records.
    org.plan = plan("guard-premium")
    org.save()
    retry = ingest(client, ingest_secret, [event("m3", action="page_created", context=page)])
    assert retry[0]["status"] == "recorded"


def test_not_stored_strips_content_and_leaves_no_term_for_it(client, org, jira, ingest_secret):
    ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    page = {"type": "page", "id": "p9", "name": "Secret roadmap"}
    (result,) = ingest(client, ingest_secret, [event("n1", action="page_created", context=[page])])
    recorded = Event.objects.get(pk=result["eventId"])
    assert recorded.context == [{"type": "page"}]
    assert recorded.content == "" and "Secret roadmap" not in recorded.message
    assert not EventTerm.objects.filter(term_hash=term_hash("secret roadmap")).exists()


def test_the_product_is_the_keys_never_the_bodys(client, org, other_org, ingest_secret):
    site = Site.objects.create(organization=other_org, name="globex.example.net")
    theirs = Product.objects.create(site=site, kind=Product.Kind.JIRA)
    (refused,) = ingest(client, ingest_secret, [event("p1", product=theirs.pk)])
    assert refused == {
        "id": "p1",
        "status": "invalid",
        "errors": {"product": "Extra inputs are not permitted"},
    }
    response = post(client, ingest_secret, {"product": theirs.pk, "events": [event("p2")]})
    recorded = Event.objects.get(pk=response.json()["results"][0]["eventId"])
    assert recorded.organization_id == org.pk and recorded.product_id != theirs.pk
    assert not Event.objects.filter(organization=other_org).exists()


def test_times_in_the_future_or_past_retention_are_invalid(client, ingest_secret):
    results = ingest(
        client,
        ingest_secret,
        [
            event("t1", ago=-timedelta(minutes=6)),
            event("t2", ago=-timedelta(minutes=4)),
            event("t3", ago=timedelta(days=181)),
            event("t4", time="2026-01-01T00:00:00"),
        ],
    )
    assert [r["status"] for r in results] == ["invalid", "recorded", "invalid", "invalid"]
    assert results[0]["errors"] == {"time": "More than 5 minutes in the future"}
    assert results[2]["errors"] == {"time": "Older than the plan's retention (180 days)"}
    assert results[3]["errors"]["time"].startswith("Input should have timezone info")


def test_a_nul_character_makes_that_event_invalid_not_the_batch_a_500(client, ingest_secret):
    """No text column can hold NUL (PostgreSQL refuses it): the event is invalid and the
    others are recorded."""
    results = ingest(
        client,
        ingest_secret,
        [
            event("n1", context=[{"type": "group", "id": "g1", "name": "eng\u0000"}]),
            event("n2", userAgent="curl\u0000"),
            event("n3"),
        ],
    )
    assert [r["status"] for r in results] == ["invalid", "invalid", "recorded"]
    assert results[0]["errors"] == {"context.0.name": "NUL characters are not allowed"}
    assert results[1]["errors"] == {"userAgent": "NUL characters are not allowed"}


def test_missing_unknown_revoked_and_api_keys_are_401(client, jira, secret):
    key, ingest_key_secret = ingest_key_create(product=jira, name="old", by=None)
    ingest_key_revoke(key=key, by=None)
    for sent in (None, "ilk_nothing_here", ingest_key_secret, secret):
        response = post(client, sent, {"events": [event("k1")]})
        assert response.status_code == 401, sent
        assert response.json()["errors"][0]["status"] == "401"
    assert not IngestedEvent.objects.exists()


def test_body_and_count_limits(client, settings, ingest_secret):
    settings.INGEST_MAX_BODY_BYTES = 2000
    big = post(client, ingest_secret, {"events": [event(str(i)) for i in range(20)]})
    assert big.status_code == 413
    assert big.json()["errors"][0]["code"] == "too_large"
    settings.INGEST_MAX_BODY_BYTES = 5 * 1024 * 1024
    for body in ("not json", {"events": []}, {"event": [event("c")]}, {"events": "x"}):
        response = post(client, ingest_secret, body)
        assert response.status_code == 400, body
        assert response.json()["errors"][0]["status"] == "400"
    too_many = post(client, ingest_secret, {"events": [{}] * 1001})
    assert too_many.status_code == 400
    assert "events" in too_many.json()["errors"][0]["detail"]
    assert not IngestedEvent.objects.exists()


def test_a_body_that_is_not_json_by_its_content_type_is_415(client, ingest_secret):
    body = json.dumps({"events": [event("ct1")]})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
        response = client.post(
            URL,
            body,
            content_type=content_type,
            headers={"Authorization": f"Bearer {ingest_secret}"},
        )
        assert response.status_code == 415, content_type
        assert response.json()["errors"][0]["code"] == "unsupported_media_type"
    assert not IngestedEvent.objects.exists()
    charset = client.post(
        URL,
        body,
        content_type="application/json; charset=utf-8",
        headers={"Authorization": f"Bearer {ingest_secret}"},
    )
    assert charset.status_code == 200 and charset.json()["results"][0]["status"] == "recorded"


def test_a_body_over_django_s_limit_is_413(client, ingest_secret):
    padding = "x" * (5 * 1024 * 1024)
    response = post(client, ingest_secret, {"events": [event("big", userAgent=padding)]})
    assert response.status_code == 413


def test_rate_limit_per_ingest_key(client, settings, ingest_secret):
    settings.INGEST_RATE_LIMIT, settings.API_RATE_WINDOW = 2, WINDOW
    steady_window()
    assert_rate_headers(post(client, ingest_secret, {"events": [event("r1")]}), 2, 1)
    assert_rate_headers(post(client, ingest_secret, {"events": []}), 2, 0)
    refused = post(client, ingest_secret, {"events": [event("r2")]})
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert_rate_headers(refused, 2, 0)
    assert refused.json()["errors"][0]["code"] == "rate_limited"
    assert not IngestedEvent.objects.filter(external_id="r2").exists()


def test_the_endpoint_is_in_the_openapi_document(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    assert "post" in paths["/ingest/v1/events"]


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_concurrent_identical_requests_record_each_event_once(org, jira):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    secret = ingest_key_create(product=jira, name="Jira webhook", by=None)[1]
    batch = [event(f"c{i}") for i in range(500)]
    before = Event.objects.filter(organization=org).count()
    turns = itertools.count()

    def send():  # half the requests list the events the other way round
        return ingest(Client(), secret, batch if next(turns) % 2 else batch[::-1])

    answers = in_threads(send, count=4)
    statuses = sorted(r["status"] for results in answers for r in results)
    assert statuses.count("recorded") == 500 and statuses.count("duplicate") == 1500
    event_ids = {r["id"]: r["eventId"] for results in answers for r in results}
    assert len(event_ids) == 500
    for results in answers:
        assert all(event_ids[r["id"]] == r["eventId"] for r in results)
    assert Event.objects.filter(organization=org).count() == before + 500


def http_post(server, secret: str, data: bytes, content_type: str = "application/json"):
    """(status, JSON body) of a POST to the ingest endpoint over real HTTP."""
    request = urllib.request.Request(
        server.url + URL,
        data=data,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.integration
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_over_http_to_gunicorn(org, jira, tmp_path):
    _, secret = ingest_key_create(product=jira, name="Jira webhook", by=None)
    _, api_secret = api_key_create(organization=org, name="SIEM", days=1, by=None)
    server = live_api_start(tmp_path)
    try:
        batch = json.dumps({"events": [event(f"h{n}") for n in range(1000)]}).encode()
        status, body = http_post(server, secret, batch)
        assert status == 200 and {r["status"] for r in body["results"]} == {"recorded"}
        again = http_post(server, secret, batch)
        assert {r["status"] for r in again[1]["results"]} == {"duplicate"}
        # The newest group event the API lists is the last one of the batch.
        newest = f"/admin/v1/orgs/{org.pk}/events?limit=1&action=group_created"
        status, _, listed = server.get(newest, api_secret)
        assert status == 200 and listed["data"][0]["id"] == body["results"][-1]["eventId"]

        oversized = json.dumps({"events": [event("big", userAgent="x" * (6 << 20))]}).encode()
        refusals = [
            (http_post(server, "ilk_nothing_here", batch), 401),
            (http_post(server, secret, oversized), 413),
            (http_post(server, secret, batch, "text/plain"), 415),
            (http_post(server, secret, b"{not json"), 400),
        ]
        for (status, error), expected in refusals:
            assert status == expected and error["errors"][0]["status"] == str(expected)
    finally:
        live_api_stop(server)
    assert "Traceback" not in server.log.read_text()
    assert IngestedEvent.objects.filter(product=jira).count() == 1000  # refused: nothing


PLAIN = {
    "id": "jira-1",
    "time": "2026-11-30T09:00:00.123456+00:00",
    "action": "group_created",
    "actor": {"type": "user", "id": "u7", "name": "Dana", "email": "dana@acme.test"},
    "context": [{"type": "group", "id": "g1", "name": "eng"}, {"type": "user", "email": "e@x"}],
    "container": [{"type": "site", "id": "s1", "name": "acme"}],
    "ip": "203.0.113.9",
    "userAgent": "jira/10",
    "location": {"countryName": "Germany", "city": "Berlin"},
}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"time": "2026-11-30T09:00:00Z"},
        {"time": "2026-11-30T11:00:00.5+02:00"},
        {"time": "2026-11-30T09:00:00"},  # no zone
        {"time": "2026-11-30T24:00:00Z"},
        {"time": "2026-02-30T09:00:00Z"},
        {"time": "2026-11-30T09:00:00.1234567Z"},
        {"time": "2026-11-30 09:00:00Z"},
        {"time": 1764493200},
        {"id": ""},
        {"id": "x" * 201},
        {"id": 7},
        {"actor": {"type": "robot"}},
        {"actor": {"type": "user", "id": "x" * 65}},
        {"actor": {"type": ["user"]}},
        {"actor": {"type": "system", "extra": ""}},
        {"context": None},
        {"context": [{"type": ""}]},
        {"context": [{"type": "group", "email": "g@x"}]},
        {"context": [{"type": "g"}] * 51},
        {"container": [{"type": "x" * 41}]},
        {"ip": None},
        {"ip": 7},
        {"userAgent": "x" * 501},
        {"location": None},
        {"location": {"city": "x" * 101}},
        {"location": {"town": "Berlin"}},
        {"product": "jira"},
        {"id": "a\ud800"},
    ],
)
def test_plain_events_are_taken_as_the_schema_takes_them(change):
    """The quick check (ingest._plain_fields) accepts only what IngestEvent accepts, with
    the same values, and leaves everything else to IngestEvent (and its messages)."""
    from pydantic import ValidationError

    from audit.ingest import IngestEvent, _has_surrogate, _model_fields, _plain_fields

    raw = {**PLAIN, **change}
    try:
        expected = _model_fields(IngestEvent.model_validate(raw))
    except ValidationError:
        expected = None
    plain = None if _has_surrogate(raw) else _plain_fields(raw)
    assert plain is None or plain == expected
    if expected is not None and plain is not None:
        assert plain.time.utcoffset() == expected.time.utcoffset()
    if not change or set(change) & {"ip", "location"} and expected is not None:
        assert plain is not None  # the usual spellings take the quick way
