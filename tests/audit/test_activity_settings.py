"""Activity settings: Stored / Not stored per product, gated by the plan, recorded."""

from functools import partial

import pytest

from audit.models import ActivitySetting, Event, EventTerm
from audit.recording import term_hash
from audit.services import Actor, activity_setting_update, event_record, item
from orgs.models import Membership, Organization, Product, Site
from tests.conftest import make_user, plan
from tests.conftest import url as org_url

TITLE = "Salary review 2027"
ISSUE_KEY = "HR-1234"
PRODUCT_ERROR = "Choose one of your organization&#x27;s products."  # as the page escapes it
META = {"REMOTE_ADDR": "203.0.113.7", "HTTP_USER_AGENT": "Firefox/140 (settings test)"}


url = partial(org_url, "audit:activity-settings")


def save(client, org, product, content: str, **extra):
    return client.post(url(org), {"product": product.pk, "content": content}, **META, **extra)


def view_page(org, admin, product, title: str = TITLE) -> Event:
    result = event_record(
        organization=org,
        action="page_viewed",
        actor=Actor.for_user(admin),
        product=product,
        context=[item("page", 42, title)],
        container=[item("space", 7, "HR")],
    )
    assert result.recorded, result.reason
    return Event.objects.get(pk=result.event.pk)


def edit_issue(org, admin, product) -> Event:
    result = event_record(
        organization=org,
        action="issue_edited",
        actor=Actor.for_user(admin),
        product=product,
        context=[item("issue", 99, ISSUE_KEY)],
    )
    assert result.recorded, result.reason
    return Event.objects.get(pk=result.event.pk)


def leaves_no_trace(event: Event, text: str) -> bool:
    row = " ".join(str(getattr(event, f.attname)) for f in Event._meta.concrete_fields).lower()
    terms = EventTerm.objects.filter(organization_id=event.organization_id)
    return text.lower() not in row and not terms.filter(term_hash=term_hash(text.lower())).exists()


# Access


def test_anonymous_visitors_are_sent_to_sign_in(client, org):
    response = client.get(url(org))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_outsiders_get_404(client, org, outsider):
    client.force_login(outsider)
    assert client.get(url(org)).status_code == 404


def test_members_who_are_not_admins_get_403(client, org, member, jira):
    client.force_login(member)
    assert client.get(url(org)).status_code == 403
    assert save(client, org, jira, "not-stored").status_code == 403
    assert not ActivitySetting.objects.exists()


def test_admins_see_each_product_with_its_choice_and_the_explanation(
    client, org, admin, jira, confluence
):
    ActivitySetting.objects.create(organization=org, product=jira, content_stored=False)
    client.force_login(admin)
    response = client.get(url(org))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Activity settings" in html and "acme.example.net" in html
    assert "You can see the Confluence page title and/or Jira issue identification" in html
    assert "unable to see the Confluence page title" in html
    rows = {row["product"].kind: row for row in response.context["rows"]}
    assert rows["jira"]["stored"] is False and rows["confluence"]["stored"] is True
    assert "disabled" not in html


def test_other_methods_are_refused(client, org, admin):
    client.force_login(admin)
    assert client.put(url(org)).status_code == 405
    assert client.delete(url(org)).status_code == 405


# Saving


def test_saving_not_stored_applies_and_confirms(client, org, admin, jira):
    client.force_login(admin)
    response = save(client, org, jira, "not-stored", follow=True)
    assert response.redirect_chain == [(url(org), 302)]
    setting = ActivitySetting.objects.get(product=jira)
    assert setting.content_stored is False and setting.updated_by == admin
    assert "is now Not stored" in response.content.decode()


def test_the_change_is_itself_recorded_with_product_old_new_ip_and_agent(client, org, admin, jira):
    client.force_login(admin)
    save(client, org, jira, "not-stored")
    event = Event.objects.get(action__key="activity_settings_updated")
    assert (event.actor_type, event.actor_email) == ("user", "alice@acme.test")
    assert event.context == [{"type": "product", "id": str(jira.pk), "name": "Jira"}]
    assert event.details == {"old": "Stored", "new": "Not stored"}
    assert (event.product_id, event.site_name) == (jira.pk, "acme.example.net")
    assert (event.ip, event.user_agent) == ("203.0.113.7", "Firefox/140 (settings test)")
    assert event.message == (
        "Alice Admin changed user-created activity for Jira from Stored to Not stored"
    )


def test_saving_the_same_value_changes_and_records_nothing(client, org, admin, jira):
    client.force_login(admin)
    response = save(client, org, jira, "stored", follow=True)
    assert "was already Stored" in response.content.decode()
    assert not Event.objects.filter(action__key="activity_settings_updated").exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ({"product": "", "content": "not-stored"}, PRODUCT_ERROR),
        (
            {"product": "999999", "content": "not-stored"},
            PRODUCT_ERROR,
        ),
        (
            {"product": "abc", "content": "not-stored"},
            PRODUCT_ERROR,
        ),
        ({"content": "maybe"}, "Choose Stored or Not stored."),
    ],
)
def test_bad_input_is_refused_with_a_message(client, org, admin, jira, data, message):
    data.setdefault("product", jira.pk)
    client.force_login(admin)
    response = client.post(url(org), data, follow=True)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ActivitySetting.objects.exists()


def test_another_orgs_product_cannot_be_changed(client, org, admin, other_org):
    other_site = Site.objects.create(organization=other_org, name="globex.example.net")
    theirs = Product.objects.create(site=other_site, kind=Product.Kind.JIRA)
    client.force_login(admin)
    response = save(client, org, theirs, "not-stored", follow=True)
    assert PRODUCT_ERROR in response.content.decode()
    assert not ActivitySetting.objects.exists()


# What the setting does to events


def test_stored_events_keep_the_page_title_and_issue_key(org, admin, jira, confluence):
    assert view_page(org, admin, confluence).content == TITLE
    assert edit_issue(org, admin, jira).content == ISSUE_KEY


def test_not_stored_events_have_no_trace_of_the_content(org, admin, jira, confluence):
    activity_setting_update(
        organization=org, product=confluence, content_stored=False, actor_user=admin
    )
    activity_setting_update(organization=org, product=jira, content_stored=False, actor_user=admin)
    page, issue = view_page(org, admin, confluence), edit_issue(org, admin, jira)
    assert page.content == "" and page.context == [{"type": "page"}]
    assert page.message == "Alice Admin viewed a page in HR"
    assert issue.content == "" and issue.message == "Alice Admin edited an issue"
    assert leaves_no_trace(page, TITLE) and leaves_no_trace(issue, ISSUE_KEY)


def test_switching_back_stores_again_and_earlier_events_keep_what_they_had(org, admin, confluence):
    before = view_page(org, admin, confluence, "Before")
    activity_setting_update(
        organization=org, product=confluence, content_stored=False, actor_user=admin
    )
    during = view_page(org, admin, confluence, "During")
    activity_setting_update(
        organization=org, product=confluence, content_stored=True, actor_user=admin
    )
    after = view_page(org, admin, confluence, "After")
    contents = dict(Event.objects.filter(action__key="page_viewed").values_list("id", "content"))
    assert (contents[before.pk], contents[during.pk], contents[after.pk]) == ("Before", "", "After")
    changes = Event.objects.filter(action__key="activity_settings_updated").order_by("id")
    assert [e.details for e in changes] == [
        {"old": "Stored", "new": "Not stored"},
        {"old": "Not stored", "new": "Stored"},
    ]


def test_the_setting_is_per_product(client, org, admin, jira, confluence):
    client.force_login(admin)
    save(client, org, jira, "not-stored")
    assert edit_issue(org, admin, jira).content == ""
    assert view_page(org, admin, confluence).content == TITLE


# Plan gating: the entitlement table's "stored / not-stored setting" row

SETTING_INCLUDED = {
    "none": False,
    "guard-standard": False,
    "guard-premium": True,
    "cloud-enterprise": True,
}


@pytest.mark.parametrize("plan_key, included", SETTING_INCLUDED.items())
def test_the_page_follows_the_plan(client, admin, jira, confluence, plan_key, included):
    org = Organization.objects.get(pk=admin.memberships.get().organization_id)
    org.plan = plan(plan_key)
    org.save()
    client.force_login(admin)
    html = " ".join(client.get(url(org)).content.decode().split())
    assert ("disabled" in html) is not included
    if not included:
        assert "does not include user-created activity settings" in html
        assert "come with Guard Premium and Cloud Enterprise" in html


@pytest.mark.parametrize("plan_key, included", SETTING_INCLUDED.items())
def test_a_forged_post_is_refused_on_plans_without_the_setting(
    client, admin, jira, plan_key, included
):
    org = Organization.objects.get(pk=admin.memberships.get().organization_id)
    org.plan = plan(plan_key)
    org.save()
    client.force_login(admin)
    response = save(client, org, jira, "not-stored")
    if included:
        assert response.status_code == 302
        assert ActivitySetting.objects.get(product=jira).content_stored is False
    else:
        assert response.status_code == 403
        assert not ActivitySetting.objects.exists()
        assert not Event.objects.filter(action__key="activity_settings_updated").exists()


def test_cloud_enterprise_offers_the_setting_only_for_jira_and_confluence(
    client, org, admin, jira, bitbucket
):
    org.plan = plan("cloud-enterprise")
    org.save()
    client.force_login(admin)
    html = client.get(url(org)).content.decode()
    assert html.count("<fieldset disabled") == 1
    assert "does not record user-created activity for Bitbucket" in html
    assert save(client, org, bitbucket, "not-stored").status_code == 403
    assert not ActivitySetting.objects.exists()
    assert save(client, org, jira, "not-stored").status_code == 302


def test_the_panel_shows_the_plan_retention_and_categories(client, org, admin):
    client.force_login(admin)
    response = client.get(url(org))
    html = response.content.decode()
    assert "What your plan includes" in html and "Guard Premium" in html
    assert "180 days" in html
    recorded = {r["label"]: r["included"] for r in response.context["entitlements"]}
    assert recorded["User-created activity"] and recorded["Classification"]


def test_the_panel_reads_the_plan_so_staff_edits_show_at_once(client, org, admin):
    premium = org.plan
    premium.retention_days = 365
    premium.classification_activity = False
    premium.user_created_product_kinds = "confluence"
    premium.save()
    client.force_login(admin)
    response = client.get(url(org))
    assert "365 days" in response.content.decode()
    recorded = {r["label"]: r for r in response.context["entitlements"]}
    assert recorded["Classification"]["included"] is False
    assert recorded["User-created activity"]["note"] == "only Confluence"


def test_cloud_enterprise_panel_names_its_products(client, org, admin):
    org.plan = plan("cloud-enterprise")
    org.save()
    client.force_login(admin)
    response = client.get(url(org))
    recorded = {r["label"]: r for r in response.context["entitlements"]}
    assert recorded["User-created activity"]["note"] == "only Jira and Confluence"
    assert recorded["Classification"]["included"] is False


def test_no_plan_panel_says_there_is_no_audit_log(client, org, admin):
    org.plan = plan("none")
    org.save()
    client.force_login(admin)
    response = client.get(url(org))
    assert "does not include the organization audit log" in response.content.decode()
    assert not any(r["included"] for r in response.context["entitlements"])


def test_an_admin_of_two_orgs_changes_only_the_one_in_the_url(client, org, admin, jira, other_org):
    Membership.objects.create(user=admin, organization=other_org, role=Membership.Role.ADMIN)
    client.force_login(admin)
    assert save(client, other_org, jira, "not-stored").status_code == 302  # not its product
    assert not ActivitySetting.objects.exists()


def test_the_page_lists_an_org_without_products_helpfully(client, org, admin):
    client.force_login(admin)
    assert "no products yet" in client.get(url(org)).content.decode()


def test_the_service_refuses_a_product_of_another_org(org, admin, other_org):
    other_site = Site.objects.create(organization=other_org, name="globex.example.net")
    theirs = Product.objects.create(site=other_site, kind=Product.Kind.JIRA)
    with pytest.raises(ValueError):
        activity_setting_update(
            organization=org, product=theirs, content_stored=False, actor_user=admin
        )


def test_the_page_costs_a_fixed_number_of_queries(
    client, org, admin, site, django_assert_max_num_queries
):
    for kind in [Product.Kind.JIRA, Product.Kind.CONFLUENCE, Product.Kind.TRELLO]:
        product = Product.objects.create(site=site, kind=kind)
        ActivitySetting.objects.create(organization=org, product=product, content_stored=False)
    make_user("extra@acme.test", org)
    client.force_login(admin)
    with django_assert_max_num_queries(8):
        assert client.get(url(org)).status_code == 200
