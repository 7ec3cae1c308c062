"""The Integrity panel of the audit log page (verified, failed, not verified yet), the
inclusion proof on an event's page and the public signing keys."""

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection
from django.urls import reverse

from audit import verify
from audit.integrity import public_keys, seal_org, verify_and_record
from audit.models import Block

from ..conftest import record, seal

POSTGRES = connection.vendor == "postgresql"
postgres = pytest.mark.skipif(
    POSTGRES,
    reason="PostgreSQL seals only committed events: tests/audit/test_integrity.py",
)


def page(org) -> str:
    return reverse("audit:event-list", args=[org.pk])


def proof_url(event) -> str:
    return reverse("audit:event-proof", args=[event.organization_id, event.pk])


def panel(response) -> str:
    html = response.content.decode()
    start = html.index('<section class="panel integrity')
    return html[start : html.index("</section>", start)]


def test_the_panel_says_nothing_is_sealed_yet(client, org, admin):
    client.force_login(admin)
    text = panel(client.get(page(org)))
    assert "integrity-pending" in text and "Nothing sealed yet" in text
    assert public_keys()[0]["publicKey"] in text


# On PostgreSQL for real transactions: only committed events are sealed.
@pytest.mark.django_db(transaction=POSTGRES, serialized_rollback=POSTGRES)
def test_the_panel_says_sealed_then_verified(client, org, admin):
    for _ in range(3):
        record(org)
    assert seal(org, block_events=2) == 3
    client.force_login(admin)
    assert "3 events in 2 blocks, not verified yet" in panel(client.get(page(org)))
    verify_and_record(org)
    text = panel(client.get(page(org)))
    assert "integrity-verified" in text
    assert "Sealed and verified up to " in text and "— 3 events in 2 blocks" in text


@postgres
def test_the_panel_names_what_broke(client, org, admin):
    event = record(org)
    seal_org(org.pk)
    with connection.cursor() as cursor:  # a forged block header, as a database owner could
        cursor.execute("DROP TRIGGER IF EXISTS audit_block_no_update")
        cursor.execute(
            "UPDATE audit_block SET event_count = 2 WHERE organization_id = %s", [org.pk]
        )
    verify_and_record(org)
    client.force_login(admin)
    text = panel(client.get(page(org)))
    assert "integrity-failed" in text and "Integrity check failed" in text
    assert "Block 1 was changed: its header does not match its hash." in text
    assert event  # the event itself is untouched


@postgres
def test_an_event_page_links_its_inclusion_proof(client, org, admin):
    event = record(org)
    client.force_login(admin)
    detail = reverse("audit:event-detail", args=[org.pk, event.pk])
    assert "Not sealed yet" in client.get(detail).content.decode()
    response = client.get(proof_url(event))  # not sealed: back with a message
    assert response.status_code == 302
    assert "not sealed yet" in client.get(response["Location"]).content.decode()
    seal_org(org.pk)
    html = client.get(detail).content.decode()
    assert "Sealed in block 1" in html and proof_url(event) in html
    response = client.get(proof_url(event))
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="event-{event.pk}-proof.json"'
    proof = json.loads(response.content)["data"]
    assert proof["event_id"] == str(event.pk) and proof["block"]["sequence"] == 1


def test_the_proof_is_for_admins_of_the_org_only(client, org, admin, member, outsider):
    event = record(org)
    client.force_login(outsider)
    assert client.get(proof_url(event)).status_code == 404
    client.force_login(member)
    assert client.get(proof_url(event)).status_code == 403
    client.force_login(admin)
    assert client.post(proof_url(event)).status_code == 405
    missing = reverse("audit:event-proof", args=[org.pk, event.pk + 1000])
    assert client.get(missing).status_code == 404


def test_the_public_keys_are_published_for_anyone(client, settings):
    retired = verify.public_raw(Ed25519PrivateKey.generate().public_key())
    settings.AUDIT_RETIRED_PUBLIC_KEYS = [base64.b64encode(retired).decode()]
    response = client.get("/.well-known/audit-log-signing-key")
    assert response.status_code == 200
    body = response.json()
    assert body["algorithm"] == "Ed25519"
    assert [k["status"] for k in body["keys"]] == ["current", "retired"]
    assert body["keys"][0]["publicKey"] == public_keys()[0]["publicKey"]
    assert client.post("/.well-known/audit-log-signing-key").status_code == 405


def test_no_block_is_made_for_an_org_without_events(org):
    assert seal_org(org.pk) == 0 and not Block.objects.exists()
