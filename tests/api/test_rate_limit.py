"""The per-key rate limit: X-RateLimit-* on every response, 429 with Retry-After past
the limit, one count shared by every process (the test process and gunicorn's workers,
and a separate client process)."""

import subprocess
import sys
import time

import pytest

from orgs.services import api_key_create

from .conftest import ApiClient, live_api_start, live_api_stop, record

WINDOW = 3600


def steady_window(window: int = WINDOW, margin: int = 20) -> None:
    """Waits out the end of the current fixed window if it is under `margin` seconds
    away, so a test's requests all fall in one window."""
    left = window - int(time.time()) % window
    if left < margin:
        time.sleep(left + 1)


@pytest.fixture
def small_limit(settings):
    settings.API_RATE_LIMIT = 3
    settings.API_RATE_WINDOW = WINDOW
    steady_window()


def assert_rate_headers(response, limit: int, remaining: int) -> None:
    assert response["X-RateLimit-Limit"] == str(limit)
    assert response["X-RateLimit-Remaining"] == str(remaining)
    reset = int(response["X-RateLimit-Reset"])
    assert reset % WINDOW == 0 and 0 < reset - time.time() <= WINDOW


def test_every_response_reports_the_limit_and_the_fourth_is_429(api, org, small_limit):
    event = record(org)
    first = api.get(f"/admin/v1/orgs/{org.pk}/events/{event.pk}")
    assert first.status_code == 200
    assert_rate_headers(first, 3, 2)
    bad = api.get(f"/admin/v1/orgs/{org.pk}/events", {"limit": "0"})
    assert bad.status_code == 400
    assert_rate_headers(bad, 3, 1)
    missing = api.get(f"/admin/v2/orgs/{org.pk}/events/999999")
    assert missing.status_code == 404
    assert_rate_headers(missing, 3, 0)
    assert "Retry-After" not in missing

    refused = api.get(f"/admin/v1/orgs/{org.pk}")
    assert refused.status_code == 429
    assert_rate_headers(refused, 3, 0)
    retry = int(refused["Retry-After"])
    assert 1 <= retry <= WINDOW
    assert abs(retry - (int(refused["X-RateLimit-Reset"]) - time.time())) <= 2
    (error,) = refused.json()["errors"]
    assert error["status"] == "429" and error["code"] == "rate_limited"
    assert "Retry-After" in error["detail"]
    # Refused requests stay refused (and counted) until the window ends, every endpoint.
    for path in ("/admin/v1/orgs", f"/admin/v2/orgs/{org.pk}/events-stream"):
        again = api.get(path)
        assert again.status_code == 429 and again["Retry-After"]
        assert_rate_headers(again, 3, 0)


def test_each_key_has_its_own_count(client, api, org, small_limit):
    for _ in range(3):
        assert api.get("/admin/v1/orgs").status_code == 200
    assert api.get("/admin/v1/orgs").status_code == 429
    _, other = api_key_create(organization=org, name="second", days=1, by=None)
    fresh = ApiClient(client, other).get("/admin/v1/orgs")
    assert fresh.status_code == 200
    assert_rate_headers(fresh, 3, 2)


def test_a_refused_key_is_not_counted_against_anyone(client, api, org, small_limit):
    for _ in range(5):
        response = client.get("/admin/v1/orgs", headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401
        assert "X-RateLimit-Limit" not in response  # no key, no count to report
    ok = api.get("/admin/v1/orgs")
    assert ok.status_code == 200
    assert_rate_headers(ok, 3, 2)


def test_the_window_ends_and_the_count_starts_again(api, org, settings):
    settings.API_RATE_LIMIT = 1
    settings.API_RATE_WINDOW = 1
    steady_window(1, margin=1)
    assert api.get("/admin/v1/orgs").status_code == 200
    refused = api.get("/admin/v1/orgs")
    if refused.status_code == 200:  # crossed a second boundary: try once more
        refused = api.get("/admin/v1/orgs")
    assert refused.status_code == 429
    assert refused["Retry-After"] == "1"
    time.sleep(1.05)
    assert api.get("/admin/v1/orgs").status_code == 200


CLIENT_SCRIPT = """
import sys, urllib.request, urllib.error
url, secret, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(count):
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + secret})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as error:
        status, headers = error.code, error.headers
    print(status, headers.get("X-RateLimit-Remaining"), headers.get("Retry-After"))
"""


@pytest.mark.integration
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_the_count_is_shared_across_processes(client, org, settings, tmp_path):
    limit = 10
    settings.API_RATE_LIMIT, settings.API_RATE_WINDOW = limit, WINDOW
    _, secret = api_key_create(organization=org, name="shared", days=1, by=None)
    server = live_api_start(tmp_path, API_RATE_LIMIT=str(limit), API_RATE_WINDOW=str(WINDOW))
    try:
        steady_window(margin=40)
        here = ApiClient(client, secret)
        seen = []  # (who, status, remaining) in the order the requests were made
        for _ in range(3):  # this process, in-process
            r = here.get("/admin/v1/orgs")
            seen.append(("test", r.status_code, int(r["X-RateLimit-Remaining"])))
        for _ in range(3):  # gunicorn's workers, over HTTP
            status, headers, _ = server.get(f"/admin/v2/orgs/{org.pk}", secret)
            seen.append(("http", status, int(headers["X-RateLimit-Remaining"])))
        done = subprocess.run(  # another client process
            [sys.executable, "-c", CLIENT_SCRIPT, f"{server.url}/admin/v1/orgs", secret, "3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        for line in done.stdout.split("\n"):
            if line.strip():
                status, remaining, _ = line.split()
                seen.append(("subprocess", int(status), int(remaining)))
        r = here.get("/admin/v1/orgs")
        seen.append(("test", r.status_code, int(r["X-RateLimit-Remaining"])))
        # 10 allowed in all, whoever served them: the 11th and 12th are refused.
        status, headers, body = server.get("/admin/v1/orgs", secret)
        seen.append(("http", status, int(headers["X-RateLimit-Remaining"])))
        assert int(headers["Retry-After"]) >= 1 and body["errors"][0]["code"] == "rate_limited"
        r = here.get("/admin/v1/orgs")
        seen.append(("test", r.status_code, int(r["X-RateLimit-Remaining"])))
        done = subprocess.run(
            [sys.executable, "-c", CLIENT_SCRIPT, f"{server.url}/admin/v1/orgs", secret, "1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        status, remaining, retry = done.stdout.split()
        seen.append(("subprocess", int(status), int(remaining)))
        assert int(retry) >= 1
    finally:
        live_api_stop(server)
    assert [s for _, s, _ in seen] == [200] * 10 + [429] * 3, seen
    assert [r for _, _, r in seen] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0], seen
