"""Content-Security-Policy on every HTML page: scripts, styles and everything else only
from the app's own origin, nothing inline, no framing. The templates must therefore
hold no inline script, event handler attribute or inline style."""

import re
from pathlib import Path

import pytest
from django.conf import settings

from audit.services import event_record

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
    "base-uri": "'none'",
    "object-src": "'none'",
}
TEMPLATES = Path(settings.BASE_DIR) / "templates"


def policy_of(response) -> dict[str, str]:
    header = response.headers.get("Content-Security-Policy", "")
    directives = (d.strip().split(None, 1) for d in header.split(";") if d.strip())
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


def assert_policy(response):
    assert response["Content-Type"].startswith("text/html")
    assert policy_of(response) == POLICY


@pytest.fixture
def admin_client(client, admin):
    client.force_login(admin)
    return client


def test_the_sign_in_page_has_the_policy(client, db):
    assert_policy(client.get("/accounts/login/"))


def test_every_org_page_has_the_policy(admin_client, org, admin):
    event = event_record(organization=org, action="group_created").event
    for url in [
        "/",
        "/account/",
        f"/o/{org.pk}/audit-log/",
        f"/o/{org.pk}/audit-log/?from=nonsense",  # 400
        f"/o/{org.pk}/audit-log/events/{event.pk}/",
        f"/o/{org.pk}/audit-log/settings/",
        f"/o/{org.pk}/audit-log/exports/",
        f"/o/{org.pk}/audit-log/exports/new/",
        "/o/999999/audit-log/",  # 404
    ]:
        response = admin_client.get(url)
        assert response.status_code in (200, 302, 400, 404), url
        assert_policy(response)


def test_the_admin_has_the_policy(client, staff):
    client.force_login(staff)
    assert_policy(client.get("/staff/"))


def test_the_exports_table_the_page_polls_has_the_policy(admin_client, org):
    assert_policy(admin_client.get(f"/o/{org.pk}/audit-log/exports/?rows=1"))


def served_templates() -> list[Path]:
    """Templates rendered into pages. Email bodies are not pages (a mail client shows
    them, and most ignore stylesheets), so they keep their inline styles."""
    return [p for p in TEMPLATES.rglob("*.html") if "email" not in p.relative_to(TEMPLATES).parts]


def test_there_are_templates_to_check():
    assert len(served_templates()) > 10


@pytest.mark.parametrize(
    "template", served_templates(), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_no_template_has_inline_script_handlers_or_styles(template):
    text = template.read_text("utf-8")
    scripts = re.findall(r"<script\b[^>]*>", text, re.I)
    assert all(re.search(r"\bsrc=", tag, re.I) for tag in scripts), scripts
    assert not re.findall(r"\son[a-z]+\s*=", text, re.I)
    assert not re.findall(r"\sstyle\s*=", text, re.I)
    assert not re.findall(r"<style\b", text, re.I)
    assert "javascript:" not in text.lower()
