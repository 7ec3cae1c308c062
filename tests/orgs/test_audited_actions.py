"""The application's own actions go through the recording service: sign-in, sign-out
and failed sign-in, and what staff change in the Django admin."""

import logging
from html.parser import HTMLParser

import pytest
from django.test import Client

from audit.models import ActivitySetting, Event, EventTerm
from audit.recording import term_hash
from orgs.models import Membership, Organization, Product, Site, VerifiedDomain
from tests.conftest import make_user, plan

META = {"REMOTE_ADDR": "198.51.100.23", "HTTP_USER_AGENT": "Mozilla/5.0 (audited test)"}
SECRET = "correct-horse-battery-staple-9137"


def events(action: str, org: Organization | None = None):
    qs = Event.objects.filter(action__key=action).order_by("id")
    return qs.filter(organization=org) if org is not None else qs


def row_text(event: Event) -> str:
    return " ".join(str(getattr(event, f.attname)) for f in Event._meta.concrete_fields)


# Sign-in, sign-out, failed sign-in


def sign_in(client, email: str, password: str = "pw-for-tests"):
    return client.post("/accounts/login/", {"username": email, "password": password}, **META)


def test_signing_in_is_recorded_in_each_org_of_the_account(client, org, admin, other_org):
    Membership.objects.create(user=admin, organization=other_org, role=Membership.Role.MEMBER)
    assert sign_in(client, "alice@acme.test").status_code == 302
    recorded = events("user_logged_in")
    assert {e.organization_id for e in recorded} == {org.pk, other_org.pk}
    event = recorded.get(organization=org)
    assert (event.actor_type, event.actor_email, event.message) == (
        "user",
        "alice@acme.test",
        "Alice Admin logged in",
    )
    assert (event.ip, event.user_agent) == ("198.51.100.23", "Mozilla/5.0 (audited test)")
    assert event.action.category == "user_accounts"


def test_signing_out_is_recorded(client, org, admin):
    sign_in(client, "alice@acme.test")
    assert client.post("/accounts/logout/", **META).status_code == 302
    event = events("user_logged_out", org).get()
    assert (event.actor_email, event.ip, event.message) == (
        "alice@acme.test",
        "198.51.100.23",
        "Alice Admin logged out",
    )


def test_signing_out_without_a_session_records_nothing(client, org, admin):
    client.post("/accounts/logout/", **META)
    assert not events("user_logged_out").exists()


def test_a_failed_sign_in_is_recorded_without_the_password(client, org, admin, caplog):
    caplog.set_level(logging.DEBUG)
    response = sign_in(client, "Alice@Acme.test", SECRET)
    assert response.status_code == 200 and not response.wsgi_request.user.is_authenticated
    event = events("user_login_failed", org).get()
    assert event.message == "A sign-in as Alice Admin failed"
    assert event.context[0]["email"] == "alice@acme.test"
    assert (event.actor_type, event.actor_name) == ("anonymous", "Anonymous")
    assert (event.ip, event.user_agent) == ("198.51.100.23", "Mozilla/5.0 (audited test)")
    assert SECRET not in row_text(event)
    assert not EventTerm.objects.filter(term_hash=term_hash(SECRET)).exists()
    assert SECRET not in caplog.text


def test_a_failed_sign_in_for_an_unknown_email_records_nothing(client, org, admin):
    sign_in(client, "nobody@acme.test", SECRET)
    assert not Event.objects.exists()


def test_a_failed_sign_in_is_recorded_in_every_org_of_the_account(client, org, member, other_org):
    Membership.objects.create(user=member, organization=other_org)
    sign_in(client, "bob@acme.test", "wrong")
    assert events("user_login_failed").count() == 2


def test_orgs_without_an_audit_log_record_no_sign_ins(client, org, admin):
    org.plan = plan("none")
    org.save()
    sign_in(client, "alice@acme.test")
    assert not Event.objects.exists()


def test_an_account_with_no_membership_signs_in_without_events(client, db):
    make_user("loner@example.test")
    assert sign_in(client, "loner@example.test").status_code == 302
    assert not Event.objects.exists()


# The Django admin


class _FormScraper(HTMLParser):
    """The values a browser would submit for the admin's change form."""

    def __init__(self):
        super().__init__()
        self.data: dict[str, str] = {}
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.data[name] = a.get("value", "on")
            elif kind not in ("submit", "button", "file"):
                self.data[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, "")
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data


def admin_form(client, path: str) -> dict[str, str]:
    response = client.get(path)
    assert response.status_code == 200
    scraper = _FormScraper()
    scraper.feed(response.content.decode())
    return {k: v for k, v in scraper.data.items() if "__prefix__" not in k}


def post_admin(client, path: str, data: dict):
    response = client.post(path, data, **META)
    assert response.status_code == 302, response.content.decode()[:3000]
    return response


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def org_path(org) -> str:
    return f"/staff/orgs/organization/{org.pk}/change/"


@pytest.mark.parametrize(
    "old, new, recorded_under",
    [
        ("guard-premium", "guard-standard", "new"),
        ("guard-standard", "none", "old"),  # the last event of the log it ends
        ("none", "guard-premium", "new"),  # the first event of the log it starts
        ("guard-premium", "cloud-enterprise", "new"),
    ],
)
def test_staff_changing_a_plan_is_recorded(staff_client, org, old, new, recorded_under):
    org.plan = plan(old)
    org.save()
    data = admin_form(staff_client, org_path(org))
    data["plan"] = str(plan(new).pk)
    post_admin(staff_client, org_path(org), data)
    org.refresh_from_db()
    assert org.plan.key == new
    event = events("org_plan_changed", org).get()
    assert event.details == {"old": plan(old).name, "new": plan(new).name}
    assert event.actor_email == "staff@acme.test"
    assert (event.ip, event.user_agent) == ("198.51.100.23", "Mozilla/5.0 (audited test)")
    assert event.message == (
        f"Sam Staff changed the organization's plan from {plan(old).name} to {plan(new).name}"
    )


def test_saving_an_org_without_changing_its_plan_records_nothing(staff_client, org):
    data = admin_form(staff_client, org_path(org))
    data["name"] = "Acme Corp"
    post_admin(staff_client, org_path(org), data)
    assert not events("org_plan_changed").exists()


def test_memberships_changed_inline_on_the_org_are_recorded(staff_client, org, admin, member):
    carol = make_user("carol@acme.test", name="Carol")
    data = admin_form(staff_client, org_path(org))
    forms = int(data["memberships-TOTAL_FORMS"])
    by_user = {data[f"memberships-{i}-user"]: i for i in range(forms)}
    data[f"memberships-{by_user[str(member.pk)]}-role"] = "admin"  # member -> admin
    data[f"memberships-{by_user[str(admin.pk)]}-DELETE"] = "on"  # removed
    data.update(
        {
            f"memberships-{forms}-user": str(carol.pk),
            f"memberships-{forms}-role": "member",
            f"memberships-{forms}-created_at_0": "2026-11-25",
            f"memberships-{forms}-created_at_1": "10:00:00",
            "memberships-TOTAL_FORMS": str(forms + 1),
        }
    )
    post_admin(staff_client, org_path(org), data)
    added = events("org_member_added", org).get()
    assert added.message == "Sam Staff added Carol to the organization as Member"
    promoted = events("org_admin_added", org).get()
    assert promoted.message == "Sam Staff made Bob Member an organization admin"
    assert promoted.details == {"old": "Member", "new": "Organization admin"}
    removed = events("org_member_removed", org).get()
    assert removed.message == "Sam Staff removed Alice Admin from the organization"
    assert removed.details == {"role": "Organization admin"}
    assert {e.actor_email for e in Event.objects.all()} == {"staff@acme.test"}


def test_memberships_changed_on_their_own_admin_page_are_recorded(staff_client, org, admin):
    carol = make_user("carol@acme.test", name="Carol")
    add = admin_form(staff_client, "/staff/orgs/membership/add/")
    add.update(
        user=str(carol.pk),
        organization=str(org.pk),
        role="admin",
        created_at_0="2026-11-25",
        created_at_1="10:00:00",
    )
    post_admin(staff_client, "/staff/orgs/membership/add/", add)
    assert events("org_member_added", org).get().details == {"role": "Organization admin"}

    membership = Membership.objects.get(user=carol)
    path = f"/staff/orgs/membership/{membership.pk}/change/"
    data = admin_form(staff_client, path)
    data["role"] = "member"
    post_admin(staff_client, path, data)
    demoted = events("org_admin_removed", org).get()
    assert demoted.message == "Sam Staff removed Carol as an organization admin"

    post_admin(staff_client, f"/staff/orgs/membership/{membership.pk}/delete/", {"post": "yes"})
    assert events("org_member_removed", org).get().context[0]["email"] == "carol@acme.test"


def test_memberships_deleted_in_bulk_are_each_recorded(staff_client, org, admin, member):
    post_admin(
        staff_client,
        "/staff/orgs/membership/",
        {
            "action": "delete_selected",
            "_selected_action": [str(m.pk) for m in Membership.objects.all()],
            "post": "yes",
        },
    )
    assert not Membership.objects.exists()
    emails = {e.context[0]["email"] for e in events("org_member_removed", org)}
    assert emails == {"alice@acme.test", "bob@acme.test"}


def test_deleting_an_account_records_its_removal_from_each_org(staff_client, org, member):
    post_admin(staff_client, f"/staff/orgs/user/{member.pk}/delete/", {"post": "yes"})
    removed = events("org_member_removed", org).get()
    assert removed.context[0]["email"] == "bob@acme.test"


def test_the_org_page_shows_and_changes_activity_settings(staff_client, org, jira, confluence):
    ActivitySetting.objects.create(organization=org, product=confluence, content_stored=False)
    data = admin_form(staff_client, org_path(org))
    assert data["activity_settings-TOTAL_FORMS"] == "1"
    assert "activity_settings-0-content_stored" not in data  # Not stored: unchecked
    data.update(
        {
            "activity_settings-0-content_stored": "on",  # Confluence back to Stored
            "activity_settings-1-product": str(jira.pk),  # Jira to Not stored
            "activity_settings-TOTAL_FORMS": "2",
        }
    )
    post_admin(staff_client, org_path(org), data)
    stored = dict(ActivitySetting.objects.values_list("product__kind", "content_stored"))
    assert stored == {"confluence": True, "jira": False}
    changes = {e.context[0]["name"]: e for e in events("activity_settings_updated", org)}
    assert changes["Confluence"].details == {"old": "Not stored", "new": "Stored"}
    assert changes["Jira"].details == {"old": "Stored", "new": "Not stored"}
    assert changes["Jira"].actor_email == "staff@acme.test"
    assert changes["Jira"].ip == "198.51.100.23"


def test_the_settings_inline_offers_only_the_orgs_products(staff_client, org, jira, other_org):
    theirs = Product.objects.create(
        site=Site.objects.create(organization=other_org, name="globex.example.net"),
        kind=Product.Kind.CONFLUENCE,
    )
    html = staff_client.get(org_path(org)).content.decode()
    assert f">{jira}</option>" in html
    assert f">{theirs}</option>" not in html


def test_the_settings_inline_is_read_only_on_plans_without_the_setting(staff_client, org, jira):
    org.plan = plan("guard-standard")
    org.save()
    ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    data = admin_form(staff_client, org_path(org))
    assert "activity_settings-0-content_stored" not in data
    assert "activity_settings-TOTAL_FORMS" in data  # shown, read-only
    post_admin(staff_client, org_path(org), data)
    assert not events("activity_settings_updated").exists()


def test_a_settings_change_with_a_plan_that_drops_it_changes_nothing(staff_client, org, jira):
    data = admin_form(staff_client, org_path(org))
    data.update(
        {
            "plan": str(plan("guard-standard").pk),
            "activity_settings-0-product": str(jira.pk),
            "activity_settings-TOTAL_FORMS": "1",
        }
    )
    response = staff_client.post(org_path(org), data, follow=True, **META)
    assert "Activity settings were not changed" in response.content.decode()
    assert not ActivitySetting.objects.filter(content_stored=False).exists()
    assert events("org_plan_changed", org).exists()


def test_the_activity_setting_admin_is_read_only(staff_client, org, jira):
    setting = ActivitySetting.objects.create(organization=org, product=jira)
    assert staff_client.get("/staff/audit/activitysetting/add/").status_code == 403
    html = staff_client.get(f"/staff/audit/activitysetting/{setting.pk}/change/").content
    assert b'name="content_stored"' not in html


def test_deleting_a_not_stored_setting_records_the_return_to_stored(staff_client, org, jira):
    setting = ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    post_admin(staff_client, f"/staff/audit/activitysetting/{setting.pk}/delete/", {"post": "yes"})
    assert not ActivitySetting.objects.exists()
    event = events("activity_settings_updated", org).get()
    assert (event.details, event.actor_email) == (
        {"old": "Not stored", "new": "Stored"},
        "staff@acme.test",
    )


def test_sites_products_and_domains_added_by_staff_are_recorded(staff_client, org):
    data = admin_form(staff_client, org_path(org))
    data.update(
        {
            "sites-0-name": "new.example.net",
            "sites-TOTAL_FORMS": "1",
            "domains-0-domain": "acme.test",
            "domains-0-verified_at_0": "2026-11-25",
            "domains-0-verified_at_1": "10:00:00",
            "domains-TOTAL_FORMS": "1",
        }
    )
    post_admin(staff_client, org_path(org), data)
    assert (
        events("site_added", org).get().message
        == "Sam Staff added new.example.net to the organization"
    )
    assert events("domain_verified", org).get().message == "Sam Staff verified acme.test"

    site = Site.objects.get(name="new.example.net")
    add = admin_form(staff_client, "/staff/orgs/product/add/")
    add.update(site=str(site.pk), kind="jira")
    post_admin(staff_client, "/staff/orgs/product/add/", add)
    assert events("product_added", org).get().message == "Sam Staff added Jira to new.example.net"

    domain = VerifiedDomain.objects.get()
    post_admin(staff_client, f"/staff/orgs/verifieddomain/{domain.pk}/delete/", {"post": "yes"})
    assert events("domain_removed", org).get().message == "Sam Staff removed domain acme.test"


def test_events_stay_read_only_in_the_admin(staff_client, org, admin):
    sign_in(Client(), "alice@acme.test")
    event = Event.objects.get(action__key="user_logged_in")
    html = staff_client.get(f"/staff/audit/event/{event.pk}/change/").content
    assert b'name="_save"' not in html
    delete = staff_client.post(f"/staff/audit/event/{event.pk}/delete/", {"post": "yes"})
    assert delete.status_code == 403 and Event.objects.filter(pk=event.pk).exists()
