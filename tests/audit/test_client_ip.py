"""The client IP address recorded with an action: REMOTE_ADDR unless the app is told
how many proxies it sits behind (TRUSTED_PROXY_COUNT), and never an address that does
not parse, whoever hands it to the recording service."""

import pytest
from django.test import RequestFactory

from audit.models import Event
from audit.services import Actor, event_record, request_meta
from exports.models import ExportRequest

JUNK = "<b>not-an-ip</b>"


def meta_ip(**headers) -> str | None:
    return request_meta(RequestFactory().get("/", **headers))["ip"]


def test_without_trusted_proxies_x_forwarded_for_is_ignored(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    forwarded = {"REMOTE_ADDR": "198.51.100.5", "HTTP_X_FORWARDED_FOR": "203.0.113.66, 127.0.0.1"}
    assert meta_ip(**forwarded) == "198.51.100.5"
    assert meta_ip(REMOTE_ADDR="198.51.100.5", HTTP_X_FORWARDED_FOR=JUNK) == "198.51.100.5"
    assert meta_ip(REMOTE_ADDR="198.51.100.5", HTTP_X_REAL_IP="203.0.113.1") == "198.51.100.5"


def test_behind_one_proxy_the_address_it_saw_is_recorded_not_what_the_client_claims(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    # nginx in front: it appends the address it saw to whatever the client sent.
    assert meta_ip(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="198.51.100.20") == (
        "198.51.100.20"
    )
    # The client sent "X-Forwarded-For: 203.0.113.66"; the proxy appended what it saw.
    chain = "203.0.113.66, 198.51.100.20"
    assert meta_ip(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=chain) == "198.51.100.20"


def test_behind_two_proxies_the_address_two_hops_from_the_right_is_recorded(settings):
    settings.TRUSTED_PROXY_COUNT = 2
    chain = "203.0.113.66, 198.51.100.20, 10.0.0.1"  # spoofed, client, first proxy
    assert meta_ip(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=chain) == "198.51.100.20"
    assert meta_ip(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR="10.0.0.1") is None  # too few


def test_a_forwarded_chain_that_does_not_parse_records_no_address(settings):
    settings.TRUSTED_PROXY_COUNT = 1
    assert meta_ip(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=f"10.0.0.2, {JUNK}") is None
    # Junk the client sent, left of what the proxy appended, is not looked at.
    assert meta_ip(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=f"{JUNK}, 10.0.0.2") == "10.0.0.2"
    assert meta_ip(REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=JUNK) is None
    assert meta_ip(REMOTE_ADDR="10.0.0.9") is None  # no header: not through the proxy


def test_a_remote_addr_that_does_not_parse_records_no_address(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    assert meta_ip(REMOTE_ADDR=JUNK) is None


@pytest.mark.parametrize("bad", [JUNK, "999.1.1.1", "203.0.113.9, 10.0.0.1", "", " "])
def test_the_recording_service_stores_an_address_that_does_not_parse_as_absent(org, bad):
    result = event_record(organization=org, action="group_created", ip=bad)
    assert result.recorded and result.event.ip is None
    assert Event.objects.get(pk=result.event.pk).ip is None


def test_the_recording_service_keeps_valid_addresses(org):
    for ip, stored in [("203.0.113.9", "203.0.113.9"), ("2001:DB8::1", "2001:db8::1")]:
        event = event_record(organization=org, action="group_created", ip=ip).event
        assert Event.objects.get(pk=event.pk).ip == stored


def test_the_api_token_message_names_no_junk_address(org):
    event = event_record(
        organization=org, action="api_token_used", actor=Actor(), ip=JUNK, context=[]
    ).event
    assert JUNK not in event.message


def sign_in(client, password: str, **meta):
    return client.post(
        "/accounts/login/", {"username": "alice@acme.test", "password": password}, **meta
    )


@pytest.mark.parametrize("password", ["pw-for-tests", "wrong-password"])
def test_signing_in_with_a_junk_forwarded_address_records_no_address(
    client, org, admin, settings, password
):
    settings.TRUSTED_PROXY_COUNT = 1
    response = sign_in(client, password, REMOTE_ADDR="10.0.0.9", HTTP_X_FORWARDED_FOR=JUNK)
    assert response.status_code in (200, 302)
    (event,) = Event.objects.filter(organization=org)
    assert event.ip is None


def test_signing_in_without_trusted_proxies_records_the_socket_address(client, org, admin):
    forwarded = {"REMOTE_ADDR": "198.51.100.5", "HTTP_X_FORWARDED_FOR": "203.0.113.66, 127.0.0.1"}
    assert sign_in(client, "pw-for-tests", **forwarded).status_code == 302
    assert Event.objects.get(organization=org, action__key="user_logged_in").ip == "198.51.100.5"


def test_an_export_with_a_junk_forwarded_address_is_created_without_one(
    client, org, admin, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.TRUSTED_PROXY_COUNT = 1
    settings.PRIVATE_STORAGE_DIR = tmp_path
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/o/{org.pk}/audit-log/exports/create/",
            {"range": "7d"},
            REMOTE_ADDR="10.0.0.9",
            HTTP_X_FORWARDED_FOR=JUNK,
        )
    assert response.status_code == 302
    export = ExportRequest.objects.get()
    assert export.ip is None and export.status == ExportRequest.Status.READY
    assert Event.objects.get(action__key="audit_log_exported").ip is None
