"""The Streams pages and actions: plan gating, the 3-stream limit, SSRF at save time,
the write-only Authorization header, each action recorded, and access (outsider 404,
member 403, wrong method 405, bad input 400) on every page and action."""

import io
import json
import socket

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import Event, Stream, StreamAttempt
from orgs.models import Plan

from ..conftest import url
from .conftest import make_stream, verified

GOOD = {"name": "Splunk", "url": "http://127.0.0.1:9/hook"}
ACTIONS = [
    "audit:stream-pause",
    "audit:stream-resume",
    "audit:stream-test",
    "audit:stream-rotate",
    "audit:stream-delete",
]


@pytest.fixture
def stream(org):
    return make_stream(org, "http://127.0.0.1:9/hook", authorization="Splunk s3cret-token")[0]


def actions(org) -> list[str]:
    keys = Event.objects.filter(organization=org, action__key__startswith="audit_log_webhook")
    return list(keys.order_by("id").values_list("action__key", flat=True))


def test_an_admin_adds_a_stream_sees_the_secret_once_and_it_is_recorded(client, org, admin):
    client.force_login(admin)
    response = client.post(
        url("audit:stream-add", org),
        {**GOOD, "authorization": "Splunk s3cret-token", "categories": ["groups"]},
        HTTP_USER_AGENT="pytest-browser",
    )
    stream = Stream.objects.get()
    assert response.status_code == 302
    assert response["Location"] == url("audit:stream-detail", org, stream.pk)
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert stream.secret in page.content.decode()
    again = client.get(response["Location"]).content.decode()
    assert stream.secret not in again, "the secret is shown once"
    assert "s3cret-token" not in again and "Saved (hidden)" in again
    assert stream.categories == ["groups"] and stream.authorization == "Splunk s3cret-token"
    event = Event.objects.get(action__key="audit_log_webhook_created")
    assert event.message == "Alice Admin added streaming webhook Splunk"
    assert event.ip == "127.0.0.1" and event.user_agent == "pytest-browser"


def test_the_list_shows_health_and_the_nav_has_a_streams_tab(client, org, admin, stream):
    client.force_login(admin)
    response = client.get(url("audit:stream-list", org))
    body = response.content.decode()
    assert response.status_code == 200
    assert "SIEM" in body and "Healthy" in body and 'aria-current="page">Streams' in body
    Stream.objects.update(failures=2)
    assert "Retrying" in client.get(url("audit:stream-list", org)).content.decode()
    Stream.objects.update(enabled=False, paused_reason="Paused: the receiver answered 410 Gone.")
    body = client.get(url("audit:stream-list", org)).content.decode()
    assert "Paused" in body and "410 Gone" in body


def test_the_authorization_header_is_never_rendered_back(client, org, admin, stream, staff):
    client.force_login(admin)
    for page in (url("audit:stream-list", org), url("audit:stream-detail", org, stream.pk)):
        assert "s3cret-token" not in client.get(page).content.decode()
    # An edit without a new value keeps it; the form never holds it.
    client.post(url("audit:stream-edit", org, stream.pk), {"name": "SIEM 2", "url": stream.url})
    stream.refresh_from_db()
    assert stream.name == "SIEM 2" and stream.authorization == "Splunk s3cret-token"
    client.post(
        url("audit:stream-edit", org, stream.pk),
        {"name": "SIEM 2", "url": stream.url, "remove_authorization": "on"},
    )
    stream.refresh_from_db()
    assert stream.authorization == ""
    Stream.objects.update(authorization="Splunk s3cret-token")
    client.force_login(staff)
    admin_page = client.get(f"/staff/audit/stream/{stream.pk}/change/")
    assert admin_page.status_code == 200
    assert "s3cret-token" not in admin_page.content.decode()
    assert stream.secret not in admin_page.content.decode()


def test_each_action_does_what_it_says_and_is_recorded(
    client, org, admin, stream, django_capture_on_commit_callbacks
):
    client.force_login(admin)
    detail = url("audit:stream-detail", org, stream.pk)
    assert client.post(url("audit:stream-pause", org, stream.pk))["Location"] == detail
    stream.refresh_from_db()
    assert not stream.enabled and stream.paused_reason == "Paused by Alice Admin."
    client.post(url("audit:stream-resume", org, stream.pk))
    stream.refresh_from_db()
    assert stream.enabled
    old = stream.secret
    client.post(url("audit:stream-rotate", org, stream.pk))
    stream.refresh_from_db()
    assert stream.secret != old and stream.previous_secret == old
    assert stream.secret in client.get(detail).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url("audit:stream-test", org, stream.pk))
    attempt = StreamAttempt.objects.get(stream=stream, is_test=True)  # Q_SYNC: sent already
    assert attempt.status_code is None and attempt.error == "Could not connect"  # port 9
    client.post(url("audit:stream-delete", org, stream.pk))
    assert not Stream.objects.exists()
    assert actions(org) == [
        "audit_log_webhook_created",
        "audit_log_webhook_disabled",
        "audit_log_webhook_enabled",
        "audit_log_webhook_secret_rotated",
        "audit_log_webhook_tested",
        "audit_log_webhook_deleted",
    ]


def test_send_test_event_posts_the_recorded_test_event_and_logs_it(
    client, org, admin, receiver, django_capture_on_commit_callbacks
):
    stream, secret = make_stream(org, receiver.url)
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url("audit:stream-test", org, stream.pk), follow=True)
    assert "Test event sent to SIEM" in response.content.decode()
    (request,) = receiver.requests
    (event,) = request.events
    assert event["attributes"]["action"] == "audit_log_webhook_tested"
    assert event["message"]["content"] == "Alice Admin sent a test event to streaming webhook SIEM"
    assert json.loads(request.body)["meta"]["test"] is True
    assert verified(request, secret)
    page = client.get(url("audit:stream-detail", org, stream.pk)).content.decode()
    assert "Test</span>" in page and f">{event['id']}<" in page.replace("\n", "")


def test_a_fourth_stream_is_refused(client, org, admin):
    client.force_login(admin)
    for n in range(3):
        assert (
            client.post(url("audit:stream-add", org), {**GOOD, "name": f"S{n}"}).status_code == 302
        )
    response = client.post(url("audit:stream-add", org), {**GOOD, "name": "S4"})
    assert response.status_code == 400
    assert "the most the Guard Premium plan allows" in response.content.decode()
    assert Stream.objects.count() == 3
    assert "Delete one to add another" in client.get(url("audit:stream-list", org)).content.decode()


def test_the_limit_is_the_plans_and_staff_may_lower_it(client, org, admin):
    Plan.objects.filter(key="guard-premium").update(max_webhooks=1)
    client.force_login(admin)
    assert client.post(url("audit:stream-add", org), GOOD).status_code == 302
    assert client.post(url("audit:stream-add", org), GOOD).status_code == 400


@pytest.mark.parametrize("plan_key", ["guard-standard", "none"])
def test_plans_without_streaming_explain_why_and_refuse(client, org, admin, plan_key):
    org.plan = Plan.objects.get(key=plan_key)
    org.save()
    client.force_login(admin)
    body = client.get(url("audit:stream-list", org)).content.decode()
    assert f"The {org.plan.name} plan does not include streaming." in body
    assert "Guard Premium and Cloud Enterprise" in body
    assert 'action="/o/' not in body.split("Add a stream")[1].split("</aside>")[0]
    response = client.post(url("audit:stream-add", org), GOOD)
    assert response.status_code == 400 and not Stream.objects.exists()


@pytest.mark.parametrize(
    "bad_url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://localhost:8000/hook",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ],
)
def test_private_destinations_are_refused_at_save_time(client, org, admin, settings, bad_url):
    settings.STREAM_ALLOW_PRIVATE_HOSTS = False
    client.force_login(admin)
    response = client.post(url("audit:stream-add", org), {**GOOD, "url": bad_url})
    assert response.status_code == 400
    assert "destinations must be public" in response.content.decode()
    assert not Stream.objects.exists()


def test_a_hostname_resolving_to_loopback_is_refused(client, org, admin, settings, monkeypatch):
    settings.STREAM_ALLOW_PRIVATE_HOSTS = False
    real = socket.getaddrinfo

    def fake_dns(host, *args, **kwargs):  # a public-looking name that points inside
        return real("127.0.0.1" if host == "siem.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_dns)
    client.force_login(admin)
    response = client.post(
        url("audit:stream-add", org), {**GOOD, "url": "http://siem.example.com/"}
    )
    assert "siem.example.com resolves to 127.0.0.1, a loopback address" in response.content.decode()


def test_https_is_required_when_the_setting_says_so(client, org, admin, settings):
    settings.STREAM_REQUIRE_HTTPS = True
    client.force_login(admin)
    response = client.post(url("audit:stream-add", org), GOOD)
    assert "The destination must use https://." in response.content.decode()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"url": "http://127.0.0.1:9/"}, "Give the stream a name"),
        ({"name": "x"}, "Enter the URL events are POSTed to."),
        ({"name": "x", "url": "ftp://example.com/"}, "Enter an http:// or https:// URL."),
        ({**GOOD, "categories": ["nope"]}, "Choose activity categories from the list."),
        ({**GOOD, "product_kinds": ["nope"]}, "Choose products from the list."),
        ({**GOOD, "url": "http://u:p@127.0.0.1/"}, "not in the URL"),
    ],
)
def test_bad_input_is_a_clear_message(client, org, admin, data, message):
    client.force_login(admin)
    response = client.post(url("audit:stream-add", org), data)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_a_bad_edit_is_a_clear_message(client, org, admin, stream):
    client.force_login(admin)
    response = client.post(
        url("audit:stream-edit", org, stream.pk), {"name": "", "url": stream.url}
    )
    assert response.status_code == 400 and "Give the stream a name" in response.content.decode()


def _every_page(org, stream):
    pages = [("get", url("audit:stream-list", org)), ("post", url("audit:stream-add", org))]
    pages += [("get", url("audit:stream-detail", org, stream.pk))]
    pages += [("post", url("audit:stream-edit", org, stream.pk))]
    return pages + [("post", url(name, org, stream.pk)) for name in ACTIONS]


def test_outsiders_get_404_members_403_and_anonymous_a_sign_in(
    client, org, stream, member, outsider
):
    for method, path in _every_page(org, stream):
        client.logout()
        assert getattr(client, method)(path).status_code == 302
        client.force_login(outsider)
        assert getattr(client, method)(path, GOOD).status_code == 404, path
        client.force_login(member)
        assert getattr(client, method)(path, GOOD).status_code == 403, path
    stream.refresh_from_db()
    assert stream.enabled and Stream.objects.count() == 1


def test_another_orgs_stream_is_404(client, org, admin, other_org):
    theirs = make_stream(other_org, "http://127.0.0.1:9/")[0]
    client.force_login(admin)
    assert client.get(url("audit:stream-detail", org, theirs.pk)).status_code == 404
    assert client.post(url("audit:stream-delete", org, theirs.pk)).status_code == 404
    assert Stream.objects.filter(pk=theirs.pk).exists()


def test_wrong_methods_are_405(client, org, admin, stream):
    client.force_login(admin)
    for method, path in _every_page(org, stream):
        wrong = client.post if method == "get" else client.get
        assert wrong(path).status_code == 405, path


def test_create_stream_command_prints_the_secret_once(org):
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_stream",
        "--org",
        str(org.pk),
        "--name",
        "Ops",
        "--url",
        "http://127.0.0.1:9/",
        "--authorization",
        "Bearer x",
        stdout=out,
        stderr=err,
    )
    stream = Stream.objects.get()
    assert out.getvalue().strip() == stream.secret
    assert "shown only now" in err.getvalue()
    event = Event.objects.get(action__key="audit_log_webhook_created")
    assert event.message == "Command line added streaming webhook Ops"
    with pytest.raises(CommandError, match="No organization"):
        call_command(
            "create_stream", "--org", "999999", "--name", "x", "--url", "http://127.0.0.1/"
        )
    with pytest.raises(CommandError, match="Unknown activity category"):
        call_command(
            "create_stream",
            "--org",
            str(org.pk),
            "--name",
            "x",
            "--url",
            "http://127.0.0.1/",
            "--category",
            "nope",
        )
