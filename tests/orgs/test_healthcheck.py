"""GET /healthz for load balancers: no host check, no HTTPS redirect, no session; with
?db=1 it asks the database and says 503 when it does not answer."""

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["audit.example.com"]
    settings.SECURE_SSL_REDIRECT = True


def test_it_answers_ok_to_a_probe_by_address_over_plain_http(client, production):
    response = client.get("/healthz", HTTP_HOST="10.0.3.7:8000")
    assert response.status_code == 200
    assert response.content == b"ok\n"
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response
    # Any other path from that probe still meets the host check and the redirect.
    assert client.get("/accounts/login/", HTTP_HOST="10.0.3.7:8000").status_code == 400
    assert client.get("/accounts/login/", HTTP_HOST="audit.example.com").status_code == 301


def test_with_db_it_asks_the_database(client, production):
    response = client.get("/healthz?db=1", HTTP_HOST="10.0.3.7")
    assert (response.status_code, response.content) == (200, b"ok\n")


def test_a_database_that_does_not_answer_is_a_503(client, production, caplog):
    saved = connection.settings_dict["NAME"]
    connection.close()
    # A database that cannot be opened: a file in a directory that does not exist, or
    # a PostgreSQL database that does not exist.
    missing = "/nonexistent/dir/db.sqlite3" if connection.vendor == "sqlite" else "no_such_db"
    connection.settings_dict["NAME"] = missing
    try:
        response = client.get("/healthz?db=1", HTTP_HOST="10.0.3.7")
        plain = client.get("/healthz", HTTP_HOST="10.0.3.7")
    finally:
        connection.close()
        connection.settings_dict["NAME"] = saved
    assert (response.status_code, response.content) == (503, b"database unavailable\n")
    assert "the database does not answer" in caplog.text
    assert plain.status_code == 200  # the process itself still serves


def test_only_get_and_head(client, production):
    assert client.head("/healthz", HTTP_HOST="10.0.3.7").status_code == 200
    refused = client.post("/healthz", HTTP_HOST="10.0.3.7")
    assert refused.status_code == 405 and refused["Allow"] == "GET, HEAD"
    assert client.get("/healthz/", HTTP_HOST="audit.example.com").status_code == 301  # not it
