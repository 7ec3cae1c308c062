import re

from audit.catalogue import ACTIONS, CATEGORIES, CATEGORY_BY_KEY
from audit.models import Activity
from audit.recording import MessageValues

SEED_CATEGORIES = {
    "Site & product users",
    "Groups",
    "Organization",
    "Security policies",
    "User accounts",
    "User-created activity",
    "Classification",
    "API tokens",
    "Exports",
    "Audit log",
}
DESIGN_KEYS = {
    "user_invited",
    "group_created",
    "group_member_added",
    "user_product_access_granted",
    "org_settings_updated",
    "auth_policy_updated",
    "user_logged_in",
    "api_token_created",
    "api_token_used",
    "page_viewed",
    "issue_edited",
    "page_exported",
    "space_exported",
    "audit_log_exported",
    "activity_settings_updated",
}


def test_the_catalogue_covers_every_category_with_at_least_40_actions():
    assert len(ACTIONS) >= 40
    assert {c.label for c in CATEGORIES} == SEED_CATEGORIES
    assert {a.category for a in ACTIONS} == set(CATEGORY_BY_KEY)
    assert DESIGN_KEYS <= {a.key for a in ACTIONS}


def test_keys_are_unique_snake_case_and_labels_present():
    keys = [a.key for a in ACTIONS]
    assert len(keys) == len(set(keys))
    assert all(re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", k) for k in keys)
    assert all(a.label and a.template for a in ACTIONS)


def test_user_created_flag_matches_the_category():
    assert {a.key for a in ACTIONS if a.user_created} == {
        a.key for a in ACTIONS if a.category == "user_created"
    }


def test_every_template_renders_with_no_values():
    for action in ACTIONS:
        text = action.template.format_map(MessageValues(actor="Someone"))
        assert "{" not in text, action.key


def test_the_migration_copied_the_catalogue_into_the_database(db):
    rows = {a.key: a for a in Activity.objects.all()}
    assert set(rows) == {a.key for a in ACTIONS}
    for action in ACTIONS:
        row = rows[action.key]
        assert (row.label, row.category, row.user_created, row.template) == (
            action.label,
            action.category,
            action.user_created,
            action.template,
        )
