"""The REST API's cast: an API key of `org` and a client that sends it."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from audit.models import Event
from audit.services import event_record, item
from orgs.models import ApiKey
from orgs.services import api_key_create

from ..conftest import database_url, free_port

ROOT = Path(__file__).resolve().parents[2]


class ApiClient:
    """Django's test client with `Authorization: Bearer <secret>` on every request."""

    def __init__(self, client: Client, secret: str | None):
        self.client, self.secret = client, secret

    def headers(self, secret: str | None = None) -> dict:
        secret = secret if secret is not None else self.secret
        return {"Authorization": f"Bearer {secret}"} if secret is not None else {}

    def get(self, path: str, params=None, *, secret: str | None = None):
        return self.client.get(path, params or {}, headers=self.headers(secret))

    def json(self, path: str, params=None, status: int = 200) -> dict:
        response = self.get(path, params)
        assert response.status_code == status, (path, params, response.content[:800])
        assert response["Content-Type"].startswith("application/json")
        return response.json()


@pytest.fixture
def key_and_secret(org) -> tuple[ApiKey, str]:
    return api_key_create(organization=org, name="SIEM", days=30, by=None)


@pytest.fixture
def secret(key_and_secret) -> str:
    return key_and_secret[1]


@pytest.fixture
def api(client, secret) -> ApiClient:
    return ApiClient(client, secret)


def record(org, action: str = "group_created", *, ago: timedelta = timedelta(hours=1), **kw):
    kw.setdefault("context", [item("group", 1, "engineering")])
    kw.setdefault("occurred_at", timezone.now() - ago)
    result = event_record(organization=org, action=action, **kw)
    assert result.recorded, result.reason
    return result.event


def org_events(org, keep: Callable[[Event], bool] = lambda e: True) -> list[int]:
    """Every event of `org` that `keep` lets through, newest first (the API's order)."""
    return [
        e.pk
        for e in Event.objects.filter(organization=org).order_by("-occurred_at", "-id")
        if keep(e)
    ]


# -- a real server on the test database --------------------------------------------------


def app_database_url() -> str:
    """The test database's URL as the web processes would open it: on PostgreSQL as the
    application role when .ci/run made one (DATABASE_APP_ROLE), so the API is also
    checked against that role's privileges."""
    url = database_url()
    role = settings.DATABASE_APP_ROLE
    if connection.vendor == "postgresql" and role:
        owner = connection.settings_dict["USER"]
        url = url.replace(f"//{owner}@", f"//{role}@", 1)
    return url


@dataclass
class LiveApi:
    url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str, secret: str, timeout: float = 30):
        """(status, headers, JSON body) of a GET with the key, over real HTTP."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {secret}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return response.status, response.headers, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read())


def live_api_start(tmp_path: Path, **env_extra: str) -> LiveApi:
    """gunicorn (2 workers, as `make run`) from .venv/bin on a free port against the test
    database; the caller stops it (live_api_stop)."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": app_database_url(),
        "LOG_LEVEL": "WARNING",
        **env_extra,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "auditlog_site.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = LiveApi(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(server.url + "/api/openapi.json", timeout=2):  # noqa: S310
                return server
        except urllib.error.HTTPError:
            return server
        except OSError:
            time.sleep(0.2)
    live_api_stop(server)
    pytest.fail("gunicorn did not start:\n" + log.read_text()[-3000:])


def live_api_stop(server: LiveApi) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
