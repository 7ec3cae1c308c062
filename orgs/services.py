"""Writes to accounts, organizations and plans, with what each records in the audit log.

The Django admin (orgs/admin.py), the sign-in views and signals, and the API call these;
each records through audit's one recording service. Staff and admin changes name who
made them and from where (`ChangeAuthor`)."""

import hashlib
import hmac
import math
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from axes.models import AccessAttempt
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.http import HttpRequest
from django.utils import timezone

from audit.services import ANONYMOUS, Actor, event_record, item, request_meta, user_item

from .access import org_plan_sql, org_with_plan
from .models import (
    MAX_RETENTION_DAYS,
    ApiKey,
    ApiKeyUse,
    HashedKey,
    IngestKey,
    Membership,
    Organization,
    PasswordResetRequest,
    Plan,
    Product,
    Site,
    User,
    VerifiedDomain,
    email_normalize,
)
from .sqlrows import ModelColumns, table

PASSWORD_RESET_WINDOW = timedelta(hours=1)


def account_for_email(email: str | None) -> User | None:
    """The account an email names, in any case, or None."""
    if not email_normalize(email):
        return None
    try:
        return User.objects.get_by_natural_key(email)
    except User.DoesNotExist:
        return None


def account_event_record(
    *, user: User, action: str, actor: Actor, request: HttpRequest | None
) -> None:
    """Record `action` about `user` in every organization where the account is a member
    (an account belongs to no single organization), with the request's IP and agent."""
    meta = request_meta(request) if request is not None else {}
    for org in Organization.objects.filter(memberships__user=user).select_related("plan"):
        event_record(
            organization=org, action=action, actor=actor, context=[user_item(user)], **meta
        )


# Sign-in lockout (django-axes counts the failures; see orgs/backends.py)


def sign_in_lockout_record(*, username: str | None, request: HttpRequest | None) -> None:
    """The lockout of `username` began: recorded once, when it begins; an email that
    names no account is locked out all the same but belongs to no organization."""
    user = account_for_email(username)
    if user is not None:
        account_event_record(
            user=user, action="user_login_locked_out", actor=ANONYMOUS, request=request
        )


def sign_in_lockout_minutes_left(*, username: str | None, ip: str | None) -> int:
    """Whole minutes (at least 1) until a locked-out `username` may sign in from `ip`."""
    cool_off = settings.AXES_COOLOFF_TIME
    latest = AccessAttempt.objects.filter(username=username, ip_address=ip).aggregate(
        latest=Max("attempt_time")
    )["latest"]
    left = cool_off if latest is None else latest + cool_off - timezone.now()
    return max(1, math.ceil(left.total_seconds() / 60))


def sign_in_unlock_record(*, attempts: Iterable[AccessAttempt], request: HttpRequest) -> None:
    """Staff deleted these failed-attempt rows: `user_login_unlocked` once for each
    account whose sign-ins they were locking out (rows that lock nothing record nothing)."""
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    usernames = {
        a.username
        for a in attempts
        if a.failures_since_start >= settings.AXES_FAILURE_LIMIT and a.attempt_time > since
    }
    actor = Actor.for_user(request.user)
    for username in sorted(u for u in usernames if u):
        user = account_for_email(username)
        if user is not None:
            account_event_record(
                user=user, action="user_login_unlocked", actor=actor, request=request
            )


# Password reset and change


def password_reset_allowed(*, email: str, ip: str | None) -> bool:
    """Whether a reset request for `email` from `ip` is within the limits (per email,
    per address, in the last hour). One that is counts towards them; one that is not,
    does not, so a refused flood never pushes the limit further out. The count is in
    the database, so it holds across web workers; the rows last an hour."""
    now = timezone.now()
    PasswordResetRequest.objects.filter(requested_at__lt=now - PASSWORD_RESET_WINDOW).delete()
    mine = PasswordResetRequest.objects.create(email=email_normalize(email), ip=ip)
    # Counting up to our own row, concurrent requests see each other in order.
    counted = PasswordResetRequest.objects.filter(
        requested_at__gte=now - PASSWORD_RESET_WINDOW, pk__lte=mine.pk
    )
    over = counted.filter(email=mine.email).count() > settings.PASSWORD_RESET_MAX_PER_EMAIL or (
        ip is not None and counted.filter(ip=ip).count() > settings.PASSWORD_RESET_MAX_PER_IP
    )
    if over:
        mine.delete()
    return not over


def password_reset_request_record(*, email: str, request: HttpRequest) -> None:
    """A reset was asked for `email`: recorded when it names an account (else nothing:
    no organization's log has it, and the page says the same either way)."""
    user = account_for_email(email)
    if user is not None:
        account_event_record(
            user=user, action="user_password_reset_requested", actor=ANONYMOUS, request=request
        )


def password_changed_record(*, user: User, request: HttpRequest) -> None:
    """`user` set a new password: on the change form, or through a reset link."""
    account_event_record(
        user=user, action="user_password_changed", actor=Actor.for_user(user), request=request
    )


# Changes to organizations and plans (the Django admin today, the API next)


@dataclass(frozen=True)
class ChangeAuthor:
    """Who makes a change and from where: recorded with it."""

    user: User
    ip: str | None = None
    user_agent: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> "ChangeAuthor":
        return cls(request.user, **request_meta(request))


def org_change_record(
    *, by: ChangeAuthor, organization: Organization, action: str, plan: Plan | None = None, **fields
) -> None:
    event_record(
        organization=organization,
        action=action,
        actor=Actor.for_user(by.user),
        ip=by.ip,
        user_agent=by.user_agent,
        plan=plan,
        **fields,
    )


ROLE_LABELS = dict(Membership.Role.choices)


def _role(role: str) -> str:
    return ROLE_LABELS.get(role, role)


def membership_record(*, by: ChangeAuthor, membership: Membership, action: str) -> None:
    """org_member_added or org_member_removed, with the membership's role."""
    org_change_record(
        by=by,
        organization=membership.organization,
        action=action,
        context=[user_item(membership.user)],
        details={"role": _role(membership.role)},
    )


def memberships_before(pks: Iterable[int | None]) -> dict[int, Membership]:
    """The memberships `pks` as they are now, before a save changes them."""
    pks = [pk for pk in pks if pk is not None]
    rows = Membership.objects.filter(pk__in=pks).select_related("user", "organization__plan")
    return {m.pk: m for m in rows}


def membership_change_record(
    *, by: ChangeAuthor, membership: Membership, before: Membership | None
) -> None:
    """Records what a save changed, given the row as it was (None: it is new): added,
    moved (removed + added), or a role change (admin added / removed, role changed)."""
    if before is None:
        membership_record(by=by, membership=membership, action="org_member_added")
        return
    if (before.organization_id, before.user_id) != (membership.organization_id, membership.user_id):
        membership_record(by=by, membership=before, action="org_member_removed")
        membership_record(by=by, membership=membership, action="org_member_added")
        return
    if before.role == membership.role:
        return
    if membership.role == Membership.Role.ADMIN:
        action = "org_admin_added"
    elif before.role == Membership.Role.ADMIN:
        action = "org_admin_removed"
    else:
        action = "org_member_role_changed"
    org_change_record(
        by=by,
        organization=membership.organization,
        action=action,
        context=[user_item(membership.user)],
        details={"old": _role(before.role), "new": _role(membership.role)},
    )


def account_memberships_removed_record(*, by: ChangeAuthor, users) -> None:
    """Deleting accounts ends their memberships: each organization records the removal."""
    memberships = Membership.objects.filter(user__in=users)
    for membership in memberships.select_related("user", "organization__plan"):
        membership_record(by=by, membership=membership, action="org_member_removed")


def domain_record(*, by: ChangeAuthor, domain: VerifiedDomain, action: str) -> None:
    """domain_verified or domain_removed."""
    org_change_record(
        by=by,
        organization=domain.organization,
        action=action,
        context=[item("domain", domain.pk, domain.domain)],
    )


def site_added_record(*, by: ChangeAuthor, site: Site) -> None:
    org_change_record(by=by, organization=site.organization, action="site_added", site=site)


def product_added_record(*, by: ChangeAuthor, product: Product) -> None:
    org_change_record(
        by=by, organization=product.site.organization, action="product_added", product=product
    )


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
    if days is not None and days > MAX_RETENTION_DAYS:
        return f"Retention can be at most {MAX_RETENTION_DAYS:,} days (100 years)."
    return ""


def _setting_text(plan: Plan, name: str) -> str:
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
        old, new = _setting_text(before, field.name), _setting_text(after, field.name)
        if old != new:
            changes.append((str(field.verbose_name), old, new))
    return changes


def plan_update_record(*, by: ChangeAuthor, before: Plan, after: Plan) -> None:
    """Records `org_plan_updated`, one event per changed setting, in every organization
    on the plan: a plan's entitlements and retention are each such organization's
    business."""
    changes = plan_changes(before, after)
    ruling = _ruling_plan(after, before)
    for org in Organization.objects.filter(plan=after).order_by("pk"):
        for setting, old, new in changes:
            org_change_record(
                by=by,
                organization=org,
                action="org_plan_updated",
                details={"plan": after.name, "setting": setting, "old": old, "new": new},
                plan=ruling,
            )


def organization_plan_change_record(
    *, by: ChangeAuthor, organization: Organization, old_plan: Plan
) -> None:
    """Records `org_plan_changed` (old -> new plan names) under the ruling plan's rules."""
    org_change_record(
        by=by,
        organization=organization,
        action="org_plan_changed",
        details={"old": old_plan.name, "new": organization.plan.name},
        plan=_ruling_plan(organization.plan, old_plan),
    )


# Organization API keys (the REST API's credentials). The page (orgs/views.py), the
# create_api_key command and the API's authentication call these.

API_KEY_SCHEME = "alk"
API_KEY_PREFIX_LENGTH = 8
API_KEY_DAYS_MAX = 365
API_KEY_DAYS_DEFAULT = 30
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
# Letters and digits only, so a double-click selects the whole key: 40 of 62 ≈ 238 bits.
_SECRET_ALPHABET = _PREFIX_ALPHABET + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_SECRET_LENGTH = 40
# How stale last_used_at may get before a request writes it again: a poller then
# writes once a minute, not on every request.
API_KEY_LAST_USED_EVERY = timedelta(minutes=1)
# The command line has no account: its keys' events name it as a system actor.
COMMAND_LINE = Actor(name="Command line")


class ApiKeyRefused(ValueError):
    """A key cannot be created: the message says why (shown to the admin or operator)."""


def api_key_hash(secret: str) -> str:
    """The SHA-256 of a whole key, hex. The secret part has ~238 random bits, so no salt
    or slow hash is needed to make guessing from the hash hopeless."""
    return hashlib.sha256(secret.encode()).hexdigest()


# What API keys and ingest keys share (orgs.models.HashedKey): the text
# `<scheme>_<prefix>_<secret part>`, its hash, the constant-time lookup, the throttled
# last-used write and the events' shape. Only the scheme word and the owner differ.


def _key_prefix_of(secret: str, scheme: str) -> str | None:
    """The prefix of a key of `scheme`, or None when the text is not one."""
    word, _, rest = secret.partition("_")
    prefix, _, random_part = rest.partition("_")
    if word != scheme or len(prefix) != API_KEY_PREFIX_LENGTH or not random_part:
        return None
    return prefix


def _key_insert(
    model: type[HashedKey], *, scheme: str, name: str, by: ChangeAuthor | None, **fields
) -> tuple[HashedKey, str]:
    """A new `model` row named `name`, made by `by` (None: the command line), with a
    fresh prefix and hash, and its secret (call inside a transaction)."""
    fields.update(name=name[:100], created_by=by.user if by else None)
    for _attempt in range(5):  # 36^8 prefixes: a clash is all but impossible
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(API_KEY_PREFIX_LENGTH))
        random_part = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH))
        secret = f"{scheme}_{prefix}_{random_part}"
        try:
            with transaction.atomic():
                key = model.objects.create(
                    prefix=prefix, secret_hash=api_key_hash(secret), **fields
                )
            return key, secret
        except IntegrityError:
            continue
    raise RuntimeError(f"no free {model._meta.verbose_name} prefix after 5 attempts")


def _key_find(by_prefix, *, scheme: str, secret: str):
    """The key `by_prefix(prefix)` reads whose whole key is `secret` (hashes compared in
    constant time), else None. Says nothing about revocation or expiry."""
    prefix = _key_prefix_of(secret or "", scheme)
    if prefix is None:
        return None
    key = by_prefix(prefix)
    if key is None or not hmac.compare_digest(key.secret_hash, api_key_hash(secret)):
        return None
    return key


_API_KEY = ModelColumns(ApiKey, "k")


def _api_key_by_prefix(prefix: str) -> ApiKey | None:
    """The API key of `prefix` with its organization and plan, by one written-out
    SELECT (orgs.sqlrows): every API request reads it, and building the ORM's
    select_related of three models cost most of the 1 ms its authentication took."""
    columns, joins = org_plan_sql("k.organization_id")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_API_KEY.sql()}, {columns} FROM {table(ApiKey)} k{joins} WHERE k.prefix = %s",
            [prefix],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    key = _API_KEY.instance(row[: len(_API_KEY)])
    key.organization = org_with_plan(row[len(_API_KEY) :])
    return key


def _key_last_used_write(key: HashedKey, *, ip: str | None, now) -> None:
    """Keeps last_used_at / last_used_ip, written at most once a minute per key and
    address (API_KEY_LAST_USED_EVERY)."""
    if key.last_used_ip == ip and key.last_used_at is not None:
        if key.last_used_at > now - API_KEY_LAST_USED_EVERY:
            return
    type(key).objects.filter(pk=key.pk).update(last_used_at=now, last_used_ip=ip)
    key.last_used_at, key.last_used_ip = now, ip


def _key_event(
    *,
    key: HashedKey,
    organization: Organization,
    action: str,
    by: ChangeAuthor | None,
    **fields,
) -> None:
    """Records `action` on `key`; `by` None is the command line."""
    context = [item("token", key.pk, key.label)]
    if by is None:
        event_record(
            organization=organization,
            action=action,
            actor=COMMAND_LINE,
            context=context,
            **fields,
        )
    else:
        org_change_record(
            by=by, organization=organization, action=action, context=context, **fields
        )


def _key_revoke(key: HashedKey, *, by: ChangeAuthor | None, now, **active) -> bool:
    """Marks `key` revoked if its row is still unrevoked (and matches `active`); says
    whether it did (call inside a transaction)."""
    revoked_by = by.user if by else None
    revoked = (
        type(key)
        .objects.filter(pk=key.pk, revoked_at__isnull=True, **active)
        .update(revoked_at=now, revoked_by=revoked_by)
    )
    if revoked:
        key.revoked_at, key.revoked_by = now, revoked_by
    return bool(revoked)


def _api_key_event(*, key: ApiKey, action: str, by: ChangeAuthor | None) -> None:
    _key_event(key=key, organization=key.organization, action=action, by=by)


def api_key_refusal(organization: Organization) -> str:
    """Why `organization` may not have API keys now, or ""."""
    if not organization.plan.audit_log:
        return f"The {organization.plan.name} plan does not include the audit log."
    return ""


def api_key_create(
    *,
    organization: Organization,
    name: str,
    days: int = API_KEY_DAYS_DEFAULT,
    by: ChangeAuthor | None,
) -> tuple[ApiKey, str]:
    """A new key of `organization`, valid for `days` (1..365) from now, and its secret,
    which is nowhere else: show it once. `by` None is the command line. Records
    `audit_log_api_key_created`. Raises ApiKeyRefused (plan, name, days)."""
    name = (name or "").strip()
    if refusal := api_key_refusal(organization):
        raise ApiKeyRefused(refusal)
    if not name:
        raise ApiKeyRefused("A key needs a name.")
    if not isinstance(days, int) or not 1 <= days <= API_KEY_DAYS_MAX:
        raise ApiKeyRefused(f"A key lasts 1 to {API_KEY_DAYS_MAX} days.")
    now = timezone.now()
    with transaction.atomic():
        key, secret = _key_insert(
            ApiKey,
            scheme=API_KEY_SCHEME,
            organization=organization,
            name=name,
            by=by,
            creator_name=by.user.display_name if by else COMMAND_LINE.name,
            created_at=now,
            expires_at=now + timedelta(days=days),
        )
        _api_key_event(key=key, action="audit_log_api_key_created", by=by)
    return key, secret


def api_key_revoke(*, key: ApiKey, by: ChangeAuthor | None) -> bool:
    """Revokes an active key at once; records `audit_log_api_key_revoked`. False (and
    nothing recorded) when it was already revoked or had expired."""
    now = timezone.now()
    with transaction.atomic():
        revoked = _key_revoke(key, by=by, now=now, expires_at__gt=now)
        if revoked:
            _api_key_event(key=key, action="audit_log_api_key_revoked", by=by)
    return revoked


def _hour_of(moment):
    return moment.replace(minute=0, second=0, microsecond=0)


def api_key_use_record(*, key: ApiKey, ip: str | None, now=None) -> bool:
    """Records `api_token_used` the first time `key` is used from `ip` in an hour, and
    says whether it did. The (key, ip, hour) row is inserted only if absent, in one
    statement, so concurrent requests in any number of processes record it once."""
    now = now or timezone.now()
    table = ApiKeyUse._meta.db_table
    hour = connection.ops.adapt_datetimefield_value(_hour_of(now))
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (api_key_id, ip, hour) VALUES (%s, %s, %s) "
                "ON CONFLICT (api_key_id, ip, hour) DO NOTHING RETURNING id",
                [key.pk, ip or "", hour],
            )
            new = cursor.fetchone() is not None
        if new:
            event_record(
                organization=key.organization,
                action="api_token_used",
                actor=Actor.for_token(key.pk, key.label),
                context=[item("token", key.pk, key.label)],
                ip=ip,
            )
    return new


def api_key_authenticate(*, secret: str, ip: str | None) -> ApiKey | None:
    """The active key whose whole text is `secret`, else None (malformed, unknown,
    revoked or expired). Records its use (api_key_use_record: once per address an hour)
    and keeps last_used_at / last_used_ip, written at most once a minute per key and
    address, so a poller does not write on every request."""
    key = _key_find(_api_key_by_prefix, scheme=API_KEY_SCHEME, secret=secret)
    now = timezone.now()
    if key is None or key.status_at(now) != ApiKey.Status.ACTIVE:
        return None
    ip = ip or None
    same_place = key.last_used_ip == ip and key.last_used_at is not None
    # The row for this hour and address was inserted before last_used_* said so.
    if not (same_place and key.last_used_at >= _hour_of(now)):
        api_key_use_record(key=key, ip=ip, now=now)
    _key_last_used_write(key, ip=ip, now=now)
    return key


def api_keys_expire(*, now=None) -> int:
    """Records `audit_log_api_key_expired` once for each key past its expiry (revoked
    keys excepted), at the time it expired; run hourly (orgs.tasks). Each key is
    claimed by a conditional UPDATE, so two runs at once record it once. Returns how
    many it recorded."""
    now = now or timezone.now()
    due = ApiKey.objects.filter(
        expires_at__lte=now, expiry_recorded_at__isnull=True, revoked_at__isnull=True
    )
    recorded = 0
    for key in due.select_related("organization__plan").order_by("expires_at", "pk"):
        with transaction.atomic():
            claimed = ApiKey.objects.filter(pk=key.pk, expiry_recorded_at__isnull=True).update(
                expiry_recorded_at=now
            )
            if claimed:
                event_record(
                    organization=key.organization,
                    action="audit_log_api_key_expired",
                    occurred_at=key.expires_at,
                    context=[item("token", key.pk, key.label)],
                )
                recorded += 1
    return recorded


def api_key_uses_purge(*, now=None) -> int:
    """Removes use rows of hours that are over (kept one hour more for clock skew)."""
    now = now or timezone.now()
    return ApiKeyUse.objects.filter(hour__lt=_hour_of(now) - timedelta(hours=1)).delete()[0]


# Ingest keys: a product's credential for sending its events (orgs.models.IngestKey).
# Staff make them in the Django admin or with `manage.py create_ingest_key`; the ingest
# endpoint authenticates with ingest_key_authenticate. Their events are the catalogue's
# API token actions, in the product's organization.

INGEST_KEY_SCHEME = "ilk"


class IngestKeyRefused(ValueError):
    """An ingest key cannot be created: the message says why."""


def ingest_key_create(
    *, product: Product, name: str, by: ChangeAuthor | None
) -> tuple[IngestKey, str]:
    """A new ingest key of `product` and its secret, which is nowhere else: show it
    once. `by` None is the command line. Records `api_token_created` in the product's
    organization. Raises IngestKeyRefused for a blank name."""
    name = (name or "").strip()
    if not name:
        raise IngestKeyRefused("A key needs a name.")
    with transaction.atomic():
        key, secret = _key_insert(
            IngestKey, scheme=INGEST_KEY_SCHEME, product=product, name=name, by=by
        )
        _ingest_key_event(key=key, action="api_token_created", by=by)
    return key, secret


def _ingest_key_event(*, key: IngestKey, action: str, by: ChangeAuthor | None) -> None:
    product = key.product
    _key_event(
        key=key, organization=product.site.organization, action=action, by=by, product=product
    )


def ingest_key_revoke(*, key: IngestKey, by: ChangeAuthor | None) -> bool:
    """Revokes an active key at once; records `api_token_revoked`. False (and nothing
    recorded) when it was already revoked."""
    with transaction.atomic():
        revoked = _key_revoke(key, by=by, now=timezone.now())
        if revoked:
            _ingest_key_event(key=key, action="api_token_revoked", by=by)
    return revoked


def ingest_key_authenticate(*, secret: str, ip: str | None) -> IngestKey | None:
    """The active ingest key whose whole text is `secret`, with its product, site and
    organization loaded; else None (malformed, unknown, revoked, or another kind of
    key). Keeps last_used_at / last_used_ip, written at most once a minute per key and
    address."""
    queryset = IngestKey.objects.select_related("product__site__organization__plan")
    key = _key_find(
        lambda prefix: queryset.filter(prefix=prefix).first(),
        scheme=INGEST_KEY_SCHEME,
        secret=secret,
    )
    if key is None or not key.is_active:
        return None
    _key_last_used_write(key, ip=ip or None, now=timezone.now())
    return key
