"""Whoever failed to sign in is unknown: an actor of its own kind, "Anonymous", on the
page, the detail page and the CSV export alike, never "System"."""

import csv
import io

import pytest

from audit.models import Event
from audit.recording import term_hash
from audit.services import ANONYMOUS, event_record, user_item
from exports.services import export_file_build, export_filter, export_request_create
from tests.conftest import term_hashes


@pytest.fixture
def failed_sign_in(client, org, admin) -> Event:
    client.post("/accounts/login/", {"username": "alice@acme.test", "password": "wrong-one"})
    return Event.objects.get(organization=org, action__key="user_login_failed")


def test_a_failed_sign_in_has_the_anonymous_actor(failed_sign_in):
    assert (failed_sign_in.actor_type, failed_sign_in.actor_name) == ("anonymous", "Anonymous")
    assert failed_sign_in.get_actor_type_display() == "Anonymous"
    assert (ANONYMOUS.type, ANONYMOUS.name, ANONYMOUS.id, ANONYMOUS.email) == (
        Event.ActorType.ANONYMOUS,
        "Anonymous",
        "",
        "",
    )


def test_the_page_table_shows_anonymous_not_system(client, org, admin, failed_sign_in):
    client.force_login(admin)
    body = client.get(f"/o/{org.pk}/audit-log/").content.decode()
    row = next(r for r in body.split("<tr>") if "A sign-in as Alice Admin failed" in r)
    assert "Anonymous" in row and "System" not in row


def test_the_detail_page_shows_anonymous_not_system(client, org, admin, failed_sign_in):
    client.force_login(admin)
    body = client.get(f"/o/{org.pk}/audit-log/events/{failed_sign_in.pk}/").content.decode()
    actor = body.split("<dt>Actor</dt>", 1)[1].split("</dd>", 1)[0]
    assert "Anonymous" in actor and "System" not in actor


def test_the_csv_export_shows_anonymous(org, admin, failed_sign_in, settings, tmp_path):
    settings.PRIVATE_STORAGE_DIR = tmp_path
    event_filter = export_filter(
        organization=org, user=admin, filters={"action": ["user_login_failed"]}
    )
    assert event_filter.is_valid()
    export = export_request_create(
        organization=org,
        requested_by=admin,
        filters=event_filter.params(),
        filters_summary=event_filter.summary(),
    )
    export = export_file_build(export_id=export.pk)
    (row,) = csv.DictReader(io.StringIO(export.file_path.read_text("utf-8"), newline=""))
    assert row["Actor name"] == "Anonymous"


def test_the_anonymous_actor_is_not_a_search_term(org, admin):
    event = event_record(
        organization=org,
        action="user_login_locked_out",
        actor=ANONYMOUS,
        context=[user_item(admin)],
    ).event
    terms = term_hashes(event.pk)
    assert terms == {term_hash("alice admin"), term_hash("alice@acme.test")}
