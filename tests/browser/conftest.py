"""Playwright driving Debian's Chromium against pytest-django's live_server.

Never `playwright install`: the browser is /usr/bin/chromium. Without it these tests
skip locally; with REQUIRE_BROWSER=1 (CI) they fail instead. Screenshots go to
test-artifacts/screenshots/ (git-ignored): look at them."""

import importlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.getenv("REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium to run browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(autouse=True)
def reference_data(request):
    """The plans and the activity catalogue, which data migrations made. Serialized
    rollback should restore them after each transactional test's flush, but once
    Playwright's event loop runs in this thread, Django's connection (an asgiref Local)
    is another object, without the serialized copy: run the migrations' functions again
    (both are idempotent) for every browser test that uses the database."""
    if "django_db" not in request.keywords:
        yield
        return
    from django.apps import apps
    from django.db import connection, transaction

    from audit.guard import catalogue_copy
    from audit.services import activity_cache_clear

    request.getfixturevalue("transactional_db")
    importlib.import_module("orgs.migrations.0002_plans").create_plans(apps, None)
    with transaction.atomic():  # the catalogue is guarded: sync it as migrations do
        catalogue_copy(apps, connection)
    activity_cache_clear()  # the cached activities may be rows the flush removed
    yield
    activity_cache_clear()  # and these rows go with this test's flush


@pytest.fixture
def page(browser, live_server, settings):
    settings.SITE_URL = live_server.url
    context = browser.new_context(
        viewport={"width": 1366, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    # The browser enforces the Content-Security-Policy: whatever it refuses (an inline
    # script or style slipped into a template) is a failure, not a silent breakage.
    refused: list[str] = []
    page.on("console", lambda m: "Content Security Policy" in m.text and refused.append(m.text))
    yield page
    context.close()
    assert not refused, refused


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as test-artifacts/screenshots/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page, live_server, email: str, password: str = "pw-for-tests") -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
