"""The demo's product simulator (audit/simulator.py, `manage.py simulate_products`): its
ingest keys from seed_demo, and its events pushed over real HTTP to gunicorn landing at
the top of the audit log page."""

import io
import json
import random
import re
import stat
import time

import pytest
from django.core.management import call_command

from audit.demo import ADMIN_EMAIL
from audit.ingest import IngestEvent
from audit.models import Event, IngestedEvent
from audit.simulator import KEY_NAME, simulated_batch, simulated_products
from orgs.models import IngestKey, Organization, User
from orgs.services import ingest_key_revoke

from ..conftest import url
from .conftest import live_api_start, live_api_stop

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def seed(path) -> dict[int, str]:
    call_command("seed_demo", events=200, simulator_keys=path, stdout=io.StringIO())
    return {int(pk): secret for pk, secret in json.loads(path.read_text()).items()}


def test_seed_demo_gives_each_demo_product_with_an_audit_log_its_own_key(tmp_path):
    path = tmp_path / "keys.json"
    keys = seed(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # secrets: the owner's eyes only
    simulated = IngestKey.objects.filter(name=KEY_NAME, revoked_at__isnull=True)
    assert set(keys) == set(simulated.values_list("product_id", flat=True))
    orgs = set(simulated.values_list("product__site__organization__name", flat=True))
    assert orgs == {"Acme Corporation", "Acme Labs", "Globex"}  # not Initech: no audit log
    assert all(secret.startswith("ilk_") for secret in keys.values())

    # Seeding again keeps working keys; a revoked one is replaced.
    assert seed(path) == keys
    revoked = simulated.first()
    ingest_key_revoke(key=revoked, by=None)
    again = seed(path)
    assert again[revoked.product_id] != keys[revoked.product_id]
    assert {pk: s for pk, s in again.items() if pk != revoked.product_id} == {
        pk: s for pk, s in keys.items() if pk != revoked.product_id
    }


def test_if_empty_still_gives_the_simulator_its_keys(tmp_path):
    path = tmp_path / "keys.json"
    keys = seed(path)
    path.unlink()
    call_command("seed_demo", events=100, if_empty=True, simulator_keys=path, stdout=io.StringIO())
    assert len(json.loads(path.read_text())) == len(keys)


def test_each_product_sends_only_what_it_would(tmp_path):
    for simulated in simulated_products(seed(tmp_path / "keys.json")):
        kind = simulated.product.kind
        actions = {a.key for a in simulated.actions}
        assert not {"org_plan_updated", "audit_log_purged"} & actions
        if kind == "confluence":
            assert "page_viewed" in actions and "issue_viewed" not in actions
        elif kind.startswith("jira"):
            assert "issue_viewed" in actions and "page_viewed" not in actions
        else:
            assert not {"page_viewed", "issue_viewed"} & actions


def test_the_simulator_pushes_over_http_and_its_events_top_the_page(tmp_path, client):
    keys = seed(tmp_path / "keys.json")
    client.force_login(User.objects.get(email=ADMIN_EMAIL))  # a sign-in is an event too
    server = live_api_start(tmp_path)
    out = io.StringIO()
    try:
        started = time.monotonic()
        call_command(
            "simulate_products",
            url=server.url,
            keys=tmp_path / "keys.json",
            rounds=3,
            every=0.05,
            seed=7,
            stdout=out,
        )
        pushed_in = time.monotonic() - started
    finally:
        live_api_stop(server)
    assert "Traceback" not in server.log.read_text()
    lines = out.getvalue().splitlines()
    assert len(lines) == 9, lines  # 3 rounds × 3 organizations with an audit log
    assert pushed_in < 30
    ingested = IngestedEvent.objects.filter(product_id__in=keys, event_id__isnull=False)
    acme = Organization.objects.get(name="Acme Corporation")
    ours = Event.objects.filter(organization=acme, pk__in=ingested.values("event_id"))
    assert ours.exists() and "recorded" in out.getvalue()

    # What the simulator pushed last is the newest row of the audit log page.
    newest = Event.objects.filter(organization=acme).order_by("-occurred_at", "-id").first()
    assert ours.filter(pk=newest.pk).exists()
    page = client.get(url("audit:event-list", acme))
    assert page.status_code == 200
    first_row = re.search(r"/audit-log/events/(\d+)/", page.content.decode())
    assert first_row and int(first_row.group(1)) == newest.pk


def test_a_simulated_batch_is_valid_ingest_json(tmp_path):
    for simulated in simulated_products(seed(tmp_path / "keys.json")):
        for event in simulated_batch(simulated, random.Random(1), 20):
            IngestEvent.model_validate(event)  # raises on anything the endpoint refuses
