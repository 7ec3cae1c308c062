"""Organization API keys: creation, hashing, authentication, revocation, expiry, use
recorded once per key, address and hour, the command and the read-only admin."""

import hashlib
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from audit.models import Event
from orgs.models import ApiKey, ApiKeyUse
from orgs.services import (
    ApiKeyRefused,
    ChangeAuthor,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    api_key_uses_purge,
    api_keys_expire,
)
from orgs.tasks import api_keys_hourly
from tests.conftest import in_threads

IP = "203.0.113.9"


def events(action: str):
    return list(Event.objects.filter(action__key=action).order_by("id"))


@pytest.fixture
def by(admin) -> ChangeAuthor:
    return ChangeAuthor(admin, ip="198.51.100.7", user_agent="pytest")


@pytest.fixture
def made(org, by):
    return api_key_create(organization=org, name="SIEM export", days=30, by=by)


def test_a_key_has_a_visible_prefix_and_a_long_random_secret(made):
    key, secret = made
    scheme, prefix, random_part = secret.split("_", 2)
    assert scheme == "alk" and prefix == key.prefix and len(prefix) == 8
    assert len(random_part) >= 32
    assert key.label == f"SIEM export ({key.prefix})"
    assert key.status == "active"
    assert timedelta(days=29, hours=23) < key.expires_at - key.created_at <= timedelta(days=30)


def test_only_the_hash_is_stored_never_the_secret(made):
    key, secret = made
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    random_part = secret.split("_", 2)[2]
    with connection.cursor() as cursor:
        for table in ("orgs_apikey", "audit_event", "audit_eventterm"):
            cursor.execute(f"SELECT * FROM {table}")
            dump = repr(cursor.fetchall())
            assert random_part not in dump, table
            assert secret not in dump, table


def test_creating_is_recorded_with_the_author(made, admin):
    key, _ = made
    (event,) = events("audit_log_api_key_created")
    assert event.actor_id == str(admin.pk)
    assert event.ip == "198.51.100.7"
    assert event.context == [{"type": "token", "id": str(key.pk), "name": key.label}]
    assert key.label in event.message


@pytest.mark.parametrize("days", [0, 366, -1])
def test_days_outside_1_to_365_are_refused(org, by, days):
    with pytest.raises(ApiKeyRefused, match="1 to 365"):
        api_key_create(organization=org, name="x", days=days, by=by)
    assert not ApiKey.objects.exists()


def test_a_plan_without_the_audit_log_gets_no_key(org, by):
    org.plan.audit_log = False
    with pytest.raises(ApiKeyRefused, match="does not include the audit log"):
        api_key_create(organization=org, name="x", by=by)
    assert not ApiKey.objects.exists()


def test_authenticate_finds_the_active_key(made):
    key, secret = made
    found = api_key_authenticate(secret=secret, ip=IP)
    assert found.pk == key.pk
    key.refresh_from_db()
    assert key.last_used_ip == IP and key.last_used_at is not None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: "",
        lambda s: "nonsense",
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # right prefix, wrong secret
        lambda s: "alk_zzzzzzzz_" + s.split("_", 2)[2],  # unknown prefix
        lambda s: s.replace("alk_", "xyz_", 1),
        lambda s: s.rsplit("_", 1)[0] if s.count("_") == 2 else s[:13],  # no secret part
    ],
)
def test_authenticate_rejects_unknown_keys(made, mangle):
    _, secret = made
    assert api_key_authenticate(secret=mangle(secret), ip=IP) is None
    assert not events("api_token_used")


def test_authenticate_rejects_a_revoked_key(made, by):
    key, secret = made
    assert api_key_revoke(key=key, by=by)
    assert api_key_authenticate(secret=secret, ip=IP) is None


def test_authenticate_rejects_an_expired_key(made):
    key, secret = made
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api_key_authenticate(secret=secret, ip=IP) is None


def test_revoking_is_recorded_once(made, by, admin):
    key, _ = made
    assert api_key_revoke(key=key, by=by) is True
    assert api_key_revoke(key=key, by=by) is False
    key.refresh_from_db()
    assert key.status == "revoked" and key.revoked_by == admin
    (event,) = events("audit_log_api_key_revoked")
    assert event.actor_id == str(admin.pk)
    assert event.context[0]["name"] == key.label


def test_use_is_recorded_once_per_key_address_and_hour(made):
    key, secret = made
    for _ in range(5):
        assert api_key_authenticate(secret=secret, ip=IP)
    assert api_key_authenticate(secret=secret, ip="198.51.100.20")
    used = events("api_token_used")
    assert [e.ip for e in used] == [IP, "198.51.100.20"]
    assert used[0].actor_type == Event.ActorType.API_TOKEN
    assert used[0].actor_id == str(key.pk)
    assert used[0].message == f"API token {key.label} was used from {IP}"
    # The next hour, the same address is recorded again.
    ApiKeyUse.objects.update(hour=timezone.now() - timedelta(hours=1))
    ApiKey.objects.update(last_used_at=timezone.now() - timedelta(hours=1))
    assert api_key_authenticate(secret=secret, ip=IP)
    assert len(events("api_token_used")) == 3


def test_a_poller_does_not_write_on_every_request(made, django_assert_max_num_queries):
    _, secret = made
    api_key_authenticate(secret=secret, ip=IP)
    with django_assert_max_num_queries(1):  # the SELECT only: no use row, no last_used
        assert api_key_authenticate(secret=secret, ip=IP)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_use_is_recorded_once_across_connections(org, admin):
    _, secret = api_key_create(organization=org, name="poller", by=ChangeAuthor(admin))
    found = in_threads(lambda: api_key_authenticate(secret=secret, ip=IP), count=4)
    assert all(k is not None for k in found)
    assert len(events("api_token_used")) == 1
    assert ApiKeyUse.objects.count() == 1


def test_expiry_is_recorded_once_at_the_time_it_expired(made, by):
    key, _ = made
    revoked, _ = api_key_create(organization=key.organization, name="old", by=by)
    api_key_revoke(key=revoked, by=by)
    expired_at = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.update(expires_at=expired_at)
    assert api_keys_expire() == 1  # the revoked key's end is its revocation
    assert api_keys_expire() == 0
    (event,) = events("audit_log_api_key_expired")
    assert event.occurred_at == expired_at
    assert event.actor_type == Event.ActorType.SYSTEM
    assert event.message == f"Audit log API key {key.label} expired"


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_expiry_jobs_at_once_record_it_once(org, admin):
    key, _ = api_key_create(organization=org, name="k", by=ChangeAuthor(admin))
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(minutes=1))
    assert sorted(in_threads(api_keys_expire, count=3)) == [0, 0, 1]
    assert len(events("audit_log_api_key_expired")) == 1


def test_the_hourly_job_is_scheduled_and_cleans_up(made):
    schedule = Schedule.objects.get(func="orgs.tasks.api_keys_hourly")
    assert schedule.schedule_type == Schedule.HOURLY and schedule.repeats == -1
    key, secret = made
    api_key_authenticate(secret=secret, ip=IP)
    ApiKeyUse.objects.update(hour=timezone.now() - timedelta(hours=3))
    assert api_keys_hourly()["uses_removed"] == 1
    assert api_key_uses_purge() == 0


# -- The command ----------------------------------------------------------------------


def test_the_command_prints_the_key_once_and_records_the_command_line(org):
    out, err = StringIO(), StringIO()
    call_command(
        "create_api_key", "--org", org.pk, "--name", "backup", "--days", "7", stdout=out, stderr=err
    )
    secret = out.getvalue().strip()
    key = ApiKey.objects.get()
    assert api_key_authenticate(secret=secret, ip=None).pk == key.pk
    assert key.created_by is None and key.creator_name == "Command line"
    assert "backup" in err.getvalue() and secret not in err.getvalue()
    (event,) = events("audit_log_api_key_created")
    assert event.actor_type == Event.ActorType.SYSTEM and event.actor_name == "Command line"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "999999", "--name", "x"], "No organization"),
        (["--name", "x", "--days", "0"], "1 to 365"),
        (["--name", " "], "needs a name"),
    ],
)
def test_the_command_refuses_bad_input(org, args, message):
    if "--org" not in args:
        args = ["--org", str(org.pk), *args]
    with pytest.raises(CommandError, match=message):
        call_command("create_api_key", *args, stdout=StringIO(), stderr=StringIO())
    assert not ApiKey.objects.exists()


def test_the_command_help_runs():
    done = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "--days" in done.stdout


# -- The Django admin -----------------------------------------------------------------


def test_staff_see_keys_read_only_without_the_hash(client, staff, made):
    key, secret = made
    client.force_login(staff)
    listing = client.get("/staff/orgs/apikey/")
    assert listing.status_code == 200 and key.prefix in listing.content.decode()
    page = client.get(f"/staff/orgs/apikey/{key.pk}/change/").content.decode()
    assert key.prefix in page
    assert key.secret_hash not in page and secret not in page
    assert 'name="_save"' not in page  # a view page, not a form
    assert client.get("/staff/orgs/apikey/add/").status_code == 403
    assert client.post(f"/staff/orgs/apikey/{key.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ApiKey.objects.filter(pk=key.pk).exists()
