"""GET .../audit-digests (paged), .../audit-digests/{n} and .../events/{id}/proof: what
`python -m audit.verify` checks offline, behind the same key and errors as the rest."""

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection

from audit.integrity import seal_org
from audit.models import Event

from ..conftest import verify_offline
from .conftest import record

pytestmark = pytest.mark.skipif(
    connection.vendor == "postgresql",
    reason="PostgreSQL seals only committed events: tests/audit/test_integrity.py",
)


@pytest.fixture
def sealed(org, api):
    """Six events (the API key's creation and five more) in blocks of two: their ids."""
    for _ in range(5):
        record(org)
    seal_org(org.pk, block_events=2)
    return list(Event.objects.filter(organization=org).order_by("id").values_list("id", flat=True))


def test_digests_page_through_the_chain_and_verify_offline(api, org, sealed, tmp_path):
    base = f"/admin/v1/orgs/{org.pk}/audit-digests"
    first = api.json(base, {"limit": 2})
    assert [d["id"] for d in first["data"]] == ["1", "2"]
    assert first["data"][0]["type"] == "audit-digests"
    query = parse_qs(urlsplit(first["links"]["next"]).query)
    assert query == {"limit": ["2"], "cursor": [first["meta"]["next"]]}
    second = api.json(base, {"limit": 2, "cursor": first["meta"]["next"]})
    assert [d["id"] for d in second["data"]] == ["3"] and "next" not in second["meta"]
    pages = tmp_path / "digests.jsonl"
    pages.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    result = verify_offline("digests", str(pages), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "blocks 1 to 3 chain and are signed; 6 events" in result.stdout


def test_a_block_with_its_events_verifies_offline(api, org, sealed, tmp_path):
    body = api.json(f"/admin/v2/orgs/{org.pk}/audit-digests/2")
    assert [e["id"] for e in body["data"]["events"]] == sealed[2:4]
    path = tmp_path / "block.json"
    path.write_text(json.dumps(body))
    result = verify_offline("block", str(path), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_an_inclusion_proof_verifies_offline(api, org, sealed, tmp_path):
    body = api.json(f"/admin/v1/orgs/{org.pk}/events/{sealed[3]}/proof")
    assert body["data"]["leaf_index"] == 1 and body["data"]["block"]["sequence"] == 2
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(body))
    result = verify_offline("proof", str(path), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_errors_are_the_apis(api, org, other_org, sealed):
    unsealed = record(org)
    body = api.json(f"/admin/v1/orgs/{org.pk}/events/{unsealed.pk}/proof", status=404)
    assert body["errors"][0]["code"] == "not_sealed"
    theirs = record(other_org)
    api.json(f"/admin/v1/orgs/{other_org.pk}/audit-digests", status=404)
    api.json(f"/admin/v1/orgs/{org.pk}/events/{theirs.pk}/proof", status=404)
    api.json(f"/admin/v1/orgs/{org.pk}/audit-digests/99", status=404)
    api.json(f"/admin/v1/orgs/{org.pk}/audit-digests/x", status=404)
    bad = api.json(f"/admin/v1/orgs/{org.pk}/audit-digests", {"cursor": "nope"}, status=400)
    assert bad["errors"][0]["code"] == "bad_cursor"
    api.json(f"/admin/v1/orgs/{org.pk}/audit-digests", {"limit": 0}, status=400)
    assert api.get(f"/admin/v1/orgs/{org.pk}/audit-digests", secret="wrong").status_code == 401
