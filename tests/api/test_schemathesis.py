"""Schemathesis fuzzes the OpenAPI document (/api/openapi.json) against a real gunicorn
on the test database: an organization with varied events and a valid API key. Pass:
no 5xx, every response matches its documented status, content type, headers and
schema, the API refuses what the document forbids and accepts what it allows.

Bounded for CI: SCHEMATHESIS_MAX_EXAMPLES (25) per operation, SCHEMATHESIS_SEED for a
reproducible run (fixed by default), and a hard time limit on the whole run. The
report (JUnit and a pytest file reproducing failures) goes to
test-artifacts/schemathesis/."""

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from audit.models import Event
from audit.services import SYSTEM, Actor, Location, item, user_item
from orgs.services import api_key_create, ingest_key_create

from .conftest import ROOT, live_api_start, live_api_stop, record

pytestmark = [
    pytest.mark.integration,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

REPORTS = ROOT / "test-artifacts" / "schemathesis"
MAX_EXAMPLES = os.getenv("SCHEMATHESIS_MAX_EXAMPLES", "25")
SEED = os.getenv("SCHEMATHESIS_SEED", "20261130")
TIME_LIMIT = 150  # seconds for the whole run, server start excluded


@pytest.fixture
def seeded(org, admin, jira, confluence):
    actors = [Actor.for_user(admin), Actor.for_token(7, "ci-token"), SYSTEM]
    places = [Location("Germany", "Berlin", "Berlin"), Location("France", "", "Paris"), None]
    for n in range(30):
        record(
            org,
            ["group_created", "group_member_added", "page_viewed"][n % 3],
            ago=timedelta(hours=n * 5 + 1),
            actor=actors[n % 3],
            product=[jira, confluence][n % 2],
            ip=["203.0.113.9", "2001:db8::1", None][n % 3],
            location=places[n % 3],
            context=[user_item(admin), item("group", n, f"group-{n}")],
            container=[item("site", 1, "acme.example.net")],
        )
    return org


def config_file(tmp_path: Path, org_id: int, event_id: int) -> Path:
    """Path parameters a fuzzer would never guess: the key's organization (other ids are
    a plain 404, tested in test_errors.py) and, half the time, a real event."""
    path = tmp_path / "schemathesis.toml"
    path.write_text(
        f"""
[parameters]
"path.org_id" = "{org_id}"

[[operations]]
include-path-regex = "/events/\\\\{{event_id\\\\}}$"
parameters = {{ "path.event_id" = "{event_id}" }}
"""
    )
    return path


def schemathesis_run(tmp_path: Path, server, secret: str, config: Path, *options: str) -> None:
    """`st run` of the served document with `secret` as the bearer key; the report goes to
    REPORTS. Fails on any failed check or a traceback in the server's log."""
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        f"{server.url}/api/openapi.json",
        "--header",
        f"Authorization: Bearer {secret}",
        "--checks",
        "all",
        *options,
        "--max-examples",
        MAX_EXAMPLES,
        "--seed",
        SEED,
        "--workers",
        "4",
        "--request-timeout",
        "20",
        "--max-failures",
        "50",
        "--report",
        "junit,pytest",
        "--report-dir",
        str(REPORTS / tmp_path.name),
        "--output-sanitize",
        "true",
    ]
    try:
        done = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_LIMIT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"schemathesis ran past {TIME_LIMIT}s:\n{(exc.stdout or b'')[-4000:]!r}")
    finally:
        live_api_stop(server)
    output = done.stdout + done.stderr
    (REPORTS / tmp_path.name).mkdir(parents=True, exist_ok=True)
    (REPORTS / tmp_path.name / "output.txt").write_text(output)
    server_log = server.log.read_text()
    assert done.returncode == 0, f"{output[-12000:]}\n--- gunicorn ---\n{server_log[-3000:]}"
    assert "Traceback" not in server_log, server_log[-3000:]


@pytest.fixture(scope="module", autouse=True)
def reports_fresh():
    shutil.rmtree(REPORTS, ignore_errors=True)  # this run's reports only
    REPORTS.mkdir(parents=True)


def test_the_api_conforms_to_its_openapi_document(seeded, tmp_path):
    _, secret = api_key_create(organization=seeded, name="schemathesis", days=1, by=None)
    event_id = (
        Event.objects.filter(organization=seeded).order_by("-id").values_list("pk", flat=True)[5]
    )
    server = live_api_start(tmp_path, API_RATE_LIMIT="1000000")
    schemathesis_run(
        tmp_path,
        server,
        secret,
        config_file(tmp_path, seeded.pk, event_id),
        # Two checks that cannot apply here. positive_data_acceptance: `cursor` is
        # opaque and from / to / action / location are checked by meaning (a date, a
        # catalogue key, a JSON array), which the document says in words, so a
        # schema-valid string may rightly be a 400. negative_data_rejection: every
        # query value is a string on the wire, so its "wrong type" values (product=null,
        # product=-2.3e+16, actor=false) are valid strings, rightly accepted. Negative
        # data is still generated: it must never be a 5xx or an undocumented status.
        "--exclude-checks",
        "positive_data_acceptance,negative_data_rejection",
        # The ingest endpoint takes an ingest key, not this API key: the next test.
        "--exclude-path",
        "/ingest/v1/events",
    )


def test_the_ingest_endpoint_conforms_to_its_openapi_document(seeded, jira, tmp_path):
    _, secret = ingest_key_create(product=jira, name="schemathesis", by=None)
    server = live_api_start(tmp_path, INGEST_RATE_LIMIT="1000000")
    schemathesis_run(
        tmp_path,
        server,
        secret,
        config_file(tmp_path, seeded.pk, 0),
        # negative_data_rejection cannot apply to the events inside the list: each is
        # answered on its own, an invalid one with `"status": "invalid"` in a 200, by
        # design (one bad event never refuses the others). A body the document forbids
        # (no list, an empty or oversized one) must still be a 4xx, and nothing a 5xx.
        "--exclude-checks",
        "negative_data_rejection",
        "--include-path",
        "/ingest/v1/events",
    )
