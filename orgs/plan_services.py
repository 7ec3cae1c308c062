"""Plan changes that the audit log must record (merged into orgs/services.py once the
sign-in work there lands). The Django admin calls these; so will the API."""

from django.conf import settings

from audit.services import Actor, event_record

from .models import Organization, Plan, User


def _records_org_activity(plan: Plan) -> bool:
    return plan.audit_log and plan.admin_activity


def _ruling_plan(new: Plan, old: Plan) -> Plan:
    """Whose rules record a change between two plans: the new one's when it records
    organization activity, else the old one's. So a change that ends a log (a downgrade,
    an entitlement switched off) is still its last event, and one that starts a log its
    first."""
    return new if _records_org_activity(new) else old


def plan_retention_refusal(days: int | None) -> str:
    """Why `days` cannot be a plan's retention, or ""."""
    minimum = settings.AUDIT_MIN_RETENTION_DAYS
    if days is not None and days < minimum:
        return f"Retention must be at least {minimum} days (AUDIT_MIN_RETENTION_DAYS)."
    return ""


def _display(plan: Plan, name: str) -> str:
    value = getattr(plan, name)
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value) if value != "" else "(blank)"


def plan_changes(before: Plan, after: Plan) -> list[tuple[str, str, str]]:
    """(setting label, old, new) for each entitlement that differs."""
    changes = []
    for field in Plan._meta.concrete_fields:
        if field.primary_key or field.name == "key":
            continue
        old, new = _display(before, field.name), _display(after, field.name)
        if old != new:
            changes.append((str(field.verbose_name), old, new))
    return changes


def plan_update_record(
    *, before: Plan, after: Plan, actor_user: User, ip: str | None = None, user_agent: str = ""
) -> int:
    """Records `org_plan_updated`, one event per changed setting, in every organization
    on the plan (a plan's entitlements and retention are every such organization's
    business). Returns how many events were recorded."""
    changes = plan_changes(before, after)
    recorded = 0
    ruling = _ruling_plan(after, before)
    for org in Organization.objects.filter(plan=after).order_by("pk"):
        for setting, old, new in changes:
            result = event_record(
                organization=org,
                action="org_plan_updated",
                actor=Actor.for_user(actor_user),
                details={"plan": after.name, "setting": setting, "old": old, "new": new},
                ip=ip,
                user_agent=user_agent,
                plan=ruling,
            )
            recorded += result.recorded
    return recorded


def organization_plan_change_record(
    *,
    organization: Organization,
    old_plan: Plan,
    actor_user: User,
    ip: str | None = None,
    user_agent: str = "",
) -> None:
    """Records `org_plan_changed` (old -> new plan names) under the ruling plan's rules."""
    event_record(
        organization=organization,
        action="org_plan_changed",
        actor=Actor.for_user(actor_user),
        details={"old": old_plan.name, "new": organization.plan.name},
        ip=ip,
        user_agent=user_agent,
        plan=_ruling_plan(organization.plan, old_plan),
    )
