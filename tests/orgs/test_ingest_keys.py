"""Ingest keys: a product's credential. Creation and revocation (services, the Django
admin, the command) and what they record, the hash-only storage, authentication and
its throttled last-used write."""

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import formats, timezone

from audit.models import Event
from orgs.models import IngestKey
from orgs.services import (
    ChangeAuthor,
    IngestKeyRefused,
    api_key_authenticate,
    api_key_create,
    ingest_key_authenticate,
    ingest_key_create,
    ingest_key_revoke,
)
from tests.orgs.test_api_keys import events

IP = "203.0.113.9"
ADD_URL = "/staff/orgs/ingestkey/"


@pytest.fixture
def by(staff) -> ChangeAuthor:
    return ChangeAuthor(staff, ip="198.51.100.7", user_agent="pytest")


@pytest.fixture
def made(jira, by):
    return ingest_key_create(product=jira, name="Jira webhook", by=by)


def test_a_key_has_the_ingest_scheme_a_visible_prefix_and_a_long_secret(made, jira):
    key, secret = made
    scheme, prefix, random_part = secret.split("_", 2)
    assert scheme == "ilk" and prefix == key.prefix and len(prefix) == 8
    assert len(random_part) == 40 and random_part.isalnum()
    assert key.product == jira and key.label == f"Jira webhook ({key.prefix})"
    assert key.status == "active" and key.revoked_at is None


def test_the_secret_is_in_the_database_only_as_its_hash(made):
    key, secret = made
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    random_part = secret.split("_", 2)[2]
    with connection.cursor() as cursor:
        for table in ("orgs_ingestkey", "audit_event", "audit_eventterm", "django_session"):
            cursor.execute(f"SELECT * FROM {table}")
            dump = repr(cursor.fetchall())
            assert random_part not in dump, table


def test_creating_is_recorded_in_the_products_organization(made, org, jira, staff):
    key, _ = made
    (event,) = events("api_token_created")
    assert event.organization_id == org.pk and event.product_id == jira.pk
    assert event.actor_id == str(staff.pk)
    assert event.ip == "198.51.100.7" and event.user_agent == "pytest"
    assert event.context == [{"type": "token", "id": str(key.pk), "name": key.label}]
    assert event.message == f"Sam Staff created API token {key.label}"


def test_a_blank_name_is_refused(jira, by):
    with pytest.raises(IngestKeyRefused, match="needs a name"):
        ingest_key_create(product=jira, name="  ", by=by)
    assert not IngestKey.objects.exists()


def test_revoking_stops_the_key_and_is_recorded_once(made, by, staff):
    key, secret = made
    assert ingest_key_authenticate(secret=secret, ip=IP) == key
    assert ingest_key_revoke(key=key, by=by) is True
    assert ingest_key_revoke(key=key, by=by) is False
    key.refresh_from_db()
    assert key.status == "revoked" and key.revoked_by == staff
    assert ingest_key_authenticate(secret=secret, ip=IP) is None
    (event,) = events("api_token_revoked")
    assert event.actor_id == str(staff.pk) and event.product_id == key.product_id


def test_authenticate_loads_the_product_and_its_organization(made, org, django_assert_num_queries):
    _, secret = made
    with django_assert_num_queries(2):  # the SELECT and the first last-used write
        key = ingest_key_authenticate(secret=secret, ip=IP)
        assert key.product.site.organization == org


@pytest.mark.parametrize(
    "text",
    ["", "ilk", "ilk__x", "ilk_abcdefgh_", "ilk_short_" + "a" * 40, "alk_abcdefgh_" + "a" * 40],
)
def test_malformed_text_is_refused(made, text):
    assert ingest_key_authenticate(secret=text, ip=IP) is None


def test_unknown_or_altered_keys_are_refused(made):
    key, secret = made
    assert (
        ingest_key_authenticate(secret=secret[:-1] + ("A" if secret[-1] != "A" else "B"), ip=IP)
        is None
    )
    assert ingest_key_authenticate(secret=f"ilk_zzzzzzzz_{'a' * 40}", ip=IP) is None


def test_an_api_key_is_not_an_ingest_key_nor_the_reverse(made, org, by):
    _, ingest_secret = made
    api_key, api_secret = api_key_create(organization=org, name="SIEM", by=by)
    assert ingest_key_authenticate(secret=api_secret, ip=IP) is None
    # Even with the same prefix and random part, the scheme word differs.
    assert ingest_key_authenticate(secret="ilk" + api_secret[3:], ip=IP) is None
    assert api_key_authenticate(secret=ingest_secret, ip=IP) is None
    assert api_key_authenticate(secret="alk" + ingest_secret[3:], ip=IP) is None


def test_last_use_is_written_at_most_once_a_minute_per_address(made, django_assert_max_num_queries):
    key, secret = made
    ingest_key_authenticate(secret=secret, ip=IP)
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None and key.last_used_ip == IP
    with django_assert_max_num_queries(1):  # the SELECT only
        assert ingest_key_authenticate(secret=secret, ip=IP)
    key.refresh_from_db()
    assert key.last_used_at == first
    # Another address is written at once; a minute later the same one again.
    ingest_key_authenticate(secret=secret, ip="198.51.100.20")
    key.refresh_from_db()
    assert key.last_used_ip == "198.51.100.20"
    IngestKey.objects.update(last_used_at=timezone.now() - timedelta(minutes=2))
    ingest_key_authenticate(secret=secret, ip="198.51.100.20")
    key.refresh_from_db()
    assert key.last_used_at > timezone.now() - timedelta(minutes=1)
    assert not events("api_token_used")  # ingest use is not an API token event


# -- The command ----------------------------------------------------------------------


def test_the_command_prints_the_key_once_and_records_the_command_line(jira):
    out, err = StringIO(), StringIO()
    call_command(
        "create_ingest_key", "--product", jira.pk, "--name", "hook", stdout=out, stderr=err
    )
    secret = out.getvalue().strip()
    key = IngestKey.objects.get()
    assert out.getvalue() == secret + "\n"
    assert ingest_key_authenticate(secret=secret, ip=None) == key
    assert key.created_by is None and "hook" in err.getvalue() and secret not in err.getvalue()
    (event,) = events("api_token_created")
    assert event.actor_type == Event.ActorType.SYSTEM and event.actor_name == "Command line"


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--product", "999999", "--name", "x"], "No product"), (["--name", " "], "needs a name")],
)
def test_the_command_refuses_bad_input(jira, args, message):
    if "--product" not in args:
        args = ["--product", str(jira.pk), *args]
    with pytest.raises(CommandError, match=message):
        call_command("create_ingest_key", *args, stdout=StringIO(), stderr=StringIO())
    assert not IngestKey.objects.exists()


# -- The Django admin -----------------------------------------------------------------


def test_staff_add_a_key_and_see_it_once(client, staff, jira, org):
    client.force_login(staff)
    response = client.post(
        f"{ADD_URL}add/",
        {"product": jira.pk, "name": "Jira webhook"},
        HTTP_USER_AGENT="Firefox",
        REMOTE_ADDR="198.51.100.8",
    )
    assert response.status_code == 200
    key = IngestKey.objects.get()
    page = response.content.decode()
    secret = page.split('id="ingest-key-secret"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert secret.startswith(f"ilk_{key.prefix}_")
    assert ingest_key_authenticate(secret=secret, ip=None) == key
    assert "no-store" in response["Cache-Control"]
    # Never again: not on the key's page, the list, or the next page (no message kept).
    for url in (f"{ADD_URL}{key.pk}/change/", ADD_URL, "/staff/"):
        assert secret not in client.get(url).content.decode()
    (event,) = events("api_token_created")
    assert event.organization_id == org.pk and event.product_id == jira.pk
    assert event.actor_id == str(staff.pk)
    assert event.ip == "198.51.100.8" and event.user_agent == "Firefox"
    assert key.created_by == staff


def test_the_add_form_needs_a_product_and_a_name(client, staff, jira):
    client.force_login(staff)
    response = client.post(f"{ADD_URL}add/", {"product": jira.pk, "name": ""})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    assert not IngestKey.objects.exists() and not events("api_token_created")


def test_staff_revoke_keys_from_the_list(client, staff, made):
    key, secret = made
    client.force_login(staff)
    response = client.post(
        ADD_URL,
        {"action": "revoke", "_selected_action": [key.pk]},
        HTTP_USER_AGENT="Firefox",
        REMOTE_ADDR="198.51.100.8",
        follow=True,
    )
    assert "Revoked 1 ingest key(s)." in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_by == staff and ingest_key_authenticate(secret=secret, ip=IP) is None
    (event,) = events("api_token_revoked")
    assert event.ip == "198.51.100.8" and event.user_agent == "Firefox"


def test_the_list_shows_keys_without_the_hash_and_nothing_is_edited_or_deleted(
    client, staff, made, django_assert_max_num_queries
):
    key, _ = made
    ingest_key_authenticate(secret=made[1], ip=IP)
    client.force_login(staff)
    with django_assert_max_num_queries(12):
        listing = client.get(ADD_URL).content.decode()
    for shown in ("Jira webhook", key.prefix, "Acme", IP, "Active"):
        assert shown in listing
    page = client.get(f"{ADD_URL}{key.pk}/change/").content.decode()
    assert key.secret_hash not in listing and key.secret_hash not in page
    assert client.post(f"{ADD_URL}{key.pk}/change/", {"name": "x"}).status_code == 403
    assert client.post(f"{ADD_URL}{key.pk}/delete/", {"post": "yes"}).status_code == 403
    assert IngestKey.objects.get().name == "Jira webhook"


def test_the_product_page_shows_its_last_ingest_use(client, staff, made, jira):
    _, secret = made
    client.force_login(staff)
    page = client.get(f"/staff/orgs/product/{jira.pk}/change/").content.decode()
    assert "Last ingest use" in page
    ingest_key_authenticate(secret=secret, ip=IP)
    used = IngestKey.objects.get().last_used_at
    page = client.get(f"/staff/orgs/product/{jira.pk}/change/").content.decode()
    assert formats.localize(timezone.template_localtime(used)) in page
