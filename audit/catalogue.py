"""The activity catalogue: every action the audit log knows, in one place.

A data migration copies it into the Activity table (so staff can see it and the
database can index it); the Activity filter, the API's event-actions list and the
recording service all read that table. Keys are stable: never rename one.

Message templates use str.format fields filled by the recording service: {actor},
{user}, {group}, {site}, {product}, {page}, {issue}, {space}, {token}, {policy},
{domain}, {role}, {webhook}, {reason}, {label}, {setting}, {old}, {new}, {count}, {ip}, {plan};
a field without a value reads as a plain noun ("a page", "a group").
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    key: str
    label: str
    plan_field: str  # the Plan flag that must be on for the category to be recorded
    description: str


CATEGORIES = [
    Category(
        "site_users",
        "Site & product users",
        "admin_activity",
        "Actions that admins complete for users with product access.",
    ),
    Category(
        "groups",
        "Groups",
        "admin_activity",
        "Actions that admins complete from the Groups or Product access pages.",
    ),
    Category(
        "organization",
        "Organization",
        "admin_activity",
        "Actions organization admins complete on settings and other organization pages.",
    ),
    Category(
        "security_policies",
        "Security policies",
        "admin_activity",
        "Actions organization admins take on the organization's security policies.",
    ),
    Category(
        "user_accounts",
        "User accounts",
        "admin_activity",
        "Actions that the organization's managed accounts take with their own accounts.",
    ),
    Category(
        "user_created",
        "User-created activity",
        "user_created_activity",
        "What users do with content: create, edit, view and delete pages and issues.",
    ),
    Category(
        "classification",
        "Classification",
        "classification_activity",
        "Creating, editing, viewing and deleting data classification levels.",
    ),
    Category(
        "api_tokens",
        "API tokens",
        "api_token_activity",
        "Creation, revocation and use of API tokens.",
    ),
    Category(
        "exports",
        "Exports",
        "export_activity",
        "Exports of product content: Confluence pages and spaces.",
    ),
    Category(
        "audit_log",
        "Audit log",
        "admin_activity",
        "The audit log's own settings, exports, API keys and webhooks.",
    ),
]
CATEGORY_BY_KEY = {c.key: c for c in CATEGORIES}

# Context item types that hold user-created content: when an organization does not
# store user-created content for a product, these items lose their names and ids.
CONTENT_TYPES = frozenset({"page", "blogpost", "issue", "comment", "attachment"})
# Context item types whose names are exact search terms.
SEARCHABLE_TYPES = frozenset({"user", "group", "site"})
# The `details` an activity's message shows that are search terms too, by action. The
# rule: a {old} / {new} value is a term when it is what a context item of a searchable
# type would be (an email, or the name of a user, group or site) and the event's
# context does not already hold it: the address an email change left and the one it
# took, the name a group had before a rename. Roles, plans, settings, Stored / Not
# stored and counts are not. The retention purge derives the same terms from the row.
SEARCHABLE_DETAILS: dict[str, tuple[str, ...]] = {
    "user_email_changed": ("old", "new"),
    "group_renamed": ("old",),
}


@dataclass(frozen=True)
class Action:
    key: str
    label: str
    category: str
    template: str
    user_created: bool = False


_A = Action
ACTIONS = [
    # Site & product users
    _A("user_invited", "Invited user", "site_users", "{actor} invited {user} to {site}"),
    _A(
        "user_removed_from_site",
        "Removed user from site",
        "site_users",
        "{actor} removed {user} from {site}",
    ),
    _A(
        "user_product_access_granted",
        "Granted product access",
        "site_users",
        "{actor} granted {user} access to {product} on {site}",
    ),
    _A(
        "user_product_access_revoked",
        "Revoked product access",
        "site_users",
        "{actor} revoked access to {product} on {site} from {user}",
    ),
    _A(
        "user_site_role_changed",
        "Changed user's site role",
        "site_users",
        "{actor} changed {user}'s role on {site} from {old} to {new}",
    ),
    _A("user_deactivated", "Deactivated user", "site_users", "{actor} deactivated {user}"),
    _A("user_reactivated", "Reactivated user", "site_users", "{actor} reactivated {user}"),
    # Groups
    _A("group_created", "Created group", "groups", "{actor} created group {group}"),
    _A("group_deleted", "Deleted group", "groups", "{actor} deleted group {group}"),
    _A("group_renamed", "Renamed group", "groups", "{actor} renamed group {old} to {group}"),
    _A(
        "group_member_added",
        "Added user to group",
        "groups",
        "{actor} added {user} to group {group}",
    ),
    _A(
        "group_member_removed",
        "Removed user from group",
        "groups",
        "{actor} removed {user} from group {group}",
    ),
    _A(
        "group_product_access_granted",
        "Granted group product access",
        "groups",
        "{actor} granted group {group} access to {product} on {site}",
    ),
    _A(
        "group_product_access_revoked",
        "Revoked group product access",
        "groups",
        "{actor} revoked access to {product} on {site} from group {group}",
    ),
    _A(
        "group_admin_access_granted",
        "Granted group admin access",
        "groups",
        "{actor} made group {group} admins of {product} on {site}",
    ),
    # Organization
    _A(
        "org_settings_updated",
        "Updated organization settings",
        "organization",
        "{actor} updated the organization's {setting} from {old} to {new}",
    ),
    _A(
        "org_plan_changed",
        "Changed organization plan",
        "organization",
        "{actor} changed the organization's plan from {old} to {new}",
    ),
    _A(
        "org_admin_added",
        "Added organization admin",
        "organization",
        "{actor} made {user} an organization admin",
    ),
    _A(
        "org_admin_removed",
        "Removed organization admin",
        "organization",
        "{actor} removed {user} as an organization admin",
    ),
    _A(
        "org_member_added",
        "Added organization member",
        "organization",
        "{actor} added {user} to the organization as {role}",
    ),
    _A(
        "org_member_removed",
        "Removed organization member",
        "organization",
        "{actor} removed {user} from the organization",
    ),
    _A(
        "org_member_role_changed",
        "Changed member's role",
        "organization",
        "{actor} changed {user}'s role from {old} to {new}",
    ),
    _A("domain_verified", "Verified domain", "organization", "{actor} verified {domain}"),
    _A("domain_removed", "Removed domain", "organization", "{actor} removed domain {domain}"),
    _A(
        "site_added",
        "Added site to organization",
        "organization",
        "{actor} added {site} to the organization",
    ),
    _A("product_added", "Added product", "organization", "{actor} added {product} to {site}"),
    _A(
        "org_plan_updated",
        "Changed plan entitlements",
        "organization",
        "{actor} changed the {plan} plan: {setting} from {old} to {new}",
    ),
    # Security policies
    _A(
        "auth_policy_created",
        "Created authentication policy",
        "security_policies",
        "{actor} created authentication policy {policy}",
    ),
    _A(
        "auth_policy_updated",
        "Updated authentication policy",
        "security_policies",
        "{actor} updated authentication policy {policy}",
    ),
    _A(
        "auth_policy_deleted",
        "Deleted authentication policy",
        "security_policies",
        "{actor} deleted authentication policy {policy}",
    ),
    _A(
        "two_step_verification_enforced",
        "Enforced two-step verification",
        "security_policies",
        "{actor} enforced two-step verification in {policy}",
    ),
    _A(
        "ip_allowlist_updated",
        "Updated IP allowlist",
        "security_policies",
        "{actor} updated the IP allowlist of {policy}",
    ),
    _A(
        "data_security_policy_updated",
        "Updated data security policy",
        "security_policies",
        "{actor} updated data security policy {policy}",
    ),
    # User accounts
    _A("user_logged_in", "Logged in", "user_accounts", "{actor} logged in"),
    _A("user_logged_out", "Logged out", "user_accounts", "{actor} logged out"),
    _A("user_login_failed", "Failed login", "user_accounts", "A sign-in as {user} failed"),
    _A(
        "user_login_locked_out",
        "Sign-in locked out",
        "user_accounts",
        "Sign-ins as {user} were locked out after repeated failures",
    ),
    _A(
        "user_login_unlocked",
        "Sign-in unlocked",
        "user_accounts",
        "{actor} unlocked sign-ins as {user}",
    ),
    _A(
        "user_password_reset_requested",
        "Requested password reset",
        "user_accounts",
        "A password reset was requested for {user}",
    ),
    _A(
        "user_password_changed",
        "Changed password",
        "user_accounts",
        "{actor} changed their password",
    ),
    _A(
        "user_email_changed",
        "Changed email address",
        "user_accounts",
        "{actor} changed their email from {old} to {new}",
    ),
    _A(
        "user_two_step_enabled",
        "Enabled two-step verification",
        "user_accounts",
        "{actor} turned on two-step verification",
    ),
    _A("user_profile_updated", "Updated profile", "user_accounts", "{actor} updated their profile"),
    # User-created activity
    _A("page_created", "Created page", "user_created", "{actor} created {page} in {space}", True),
    _A("page_updated", "Edited page", "user_created", "{actor} edited {page} in {space}", True),
    _A("page_viewed", "Viewed page", "user_created", "{actor} viewed {page} in {space}", True),
    _A("page_deleted", "Deleted page", "user_created", "{actor} deleted {page} in {space}", True),
    _A("issue_created", "Created issue", "user_created", "{actor} created {issue}", True),
    _A("issue_edited", "Edited issue", "user_created", "{actor} edited {issue}", True),
    _A("issue_viewed", "Viewed issue", "user_created", "{actor} viewed {issue}", True),
    _A("issue_deleted", "Deleted issue", "user_created", "{actor} deleted {issue}", True),
    # Classification
    _A(
        "classification_level_created",
        "Created classification level",
        "classification",
        "{actor} created classification level {label}",
    ),
    _A(
        "classification_level_edited",
        "Edited classification level",
        "classification",
        "{actor} edited classification level {label}",
    ),
    _A(
        "classification_level_viewed",
        "Viewed classification level",
        "classification",
        "{actor} viewed classification level {label}",
    ),
    _A(
        "classification_level_deleted",
        "Deleted classification level",
        "classification",
        "{actor} deleted classification level {label}",
    ),
    _A(
        "content_classified",
        "Classified content",
        "classification",
        "{actor} classified {page} as {label}",
    ),
    # API tokens
    _A("api_token_created", "Created API token", "api_tokens", "{actor} created API token {token}"),
    _A("api_token_revoked", "Revoked API token", "api_tokens", "{actor} revoked API token {token}"),
    _A("api_token_used", "Used API token", "api_tokens", "API token {token} was used from {ip}"),
    # Exports of product content
    _A("page_exported", "Exported page", "exports", "{actor} exported {page} from {space}"),
    _A("space_exported", "Exported space", "exports", "{actor} exported space {space}"),
    # The audit log itself
    _A(
        "activity_settings_updated",
        "Updated activity settings",
        "audit_log",
        "{actor} changed user-created activity for {product} from {old} to {new}",
    ),
    _A(
        "audit_log_exported",
        "Exported audit log",
        "audit_log",
        "{actor} exported {count} activities from the audit log",
    ),
    _A(
        "audit_log_api_key_created",
        "Created audit log API key",
        "audit_log",
        "{actor} created audit log API key {token}",
    ),
    _A(
        "audit_log_api_key_revoked",
        "Revoked audit log API key",
        "audit_log",
        "{actor} revoked audit log API key {token}",
    ),
    _A(
        "audit_log_api_key_expired",
        "Audit log API key expired",
        "audit_log",
        "Audit log API key {token} expired",
    ),
    _A(
        "audit_log_webhook_created",
        "Added streaming webhook",
        "audit_log",
        "{actor} added streaming webhook {webhook}",
    ),
    _A(
        "audit_log_webhook_updated",
        "Updated streaming webhook",
        "audit_log",
        "{actor} updated streaming webhook {webhook}",
    ),
    _A(
        "audit_log_webhook_deleted",
        "Removed streaming webhook",
        "audit_log",
        "{actor} removed streaming webhook {webhook}",
    ),
    _A(
        "audit_log_webhook_paused",
        "Streaming webhook paused by failures",
        "audit_log",
        "Streaming to {webhook} was paused: {reason}",
    ),
    _A(
        "audit_log_webhook_disabled",
        "Paused streaming webhook",
        "audit_log",
        "{actor} paused streaming webhook {webhook}",
    ),
    _A(
        "audit_log_webhook_enabled",
        "Resumed streaming webhook",
        "audit_log",
        "{actor} resumed streaming webhook {webhook}",
    ),
    _A(
        "audit_log_webhook_tested",
        "Sent streaming webhook test event",
        "audit_log",
        "{actor} sent a test event to streaming webhook {webhook}",
    ),
    _A(
        "audit_log_webhook_secret_rotated",
        "Rotated streaming webhook secret",
        "audit_log",
        "{actor} rotated the signing secret of streaming webhook {webhook}",
    ),
    _A(
        "audit_log_purge_held",
        "Held removal of expired activities",
        "audit_log",
        "{actor} held back removing {count} expired activities: more than the safety limit",
    ),
    _A(
        "audit_log_purged",
        "Removed expired activities",
        "audit_log",
        "{actor} removed {count} activities older than the retention period",
    ),
    _A(
        "audit_log_verified",
        "Verified the audit log's integrity",
        "audit_log",
        "{actor} verified the audit log: {events} activities in {blocks} sealed blocks unchanged",
    ),
    _A(
        "audit_log_verification_failed",
        "Found the audit log altered",
        "audit_log",
        "{actor} found the audit log altered: {problem}",
    ),
]
ACTION_BY_KEY = {a.key: a for a in ACTIONS}
