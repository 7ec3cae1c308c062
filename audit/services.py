"""The one way audit events are written.

`event_record` records one activity; `event_record_batch` records many with the same
rules and a fraction of the cost. Both apply the organization's plan (an activity the
plan does not cover is not recorded, and the result says why), the stored / not-stored
setting for user-created content, copy names into the row, render the message, fill
the exact-term search index and the hourly counts, and stamp the recorded time.
"""

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, transaction
from django.http import HttpRequest
from django.utils import timezone

from orgs.models import Organization, Plan, Product, Site, User

from .catalogue import CATEGORY_BY_KEY, CONTENT_TYPES, SEARCHABLE_TYPES
from .models import Activity, ActivitySetting, Event, EventHourlyCount, EventTerm

MAX_TERM_LENGTH = 200


@dataclass(frozen=True)
class Actor:
    type: str = Event.ActorType.SYSTEM
    id: str = ""
    name: str = "System"
    email: str = ""

    @classmethod
    def for_user(cls, user: User) -> "Actor":
        return cls(Event.ActorType.USER, str(user.pk), user.name, user.email)

    @classmethod
    def for_token(cls, token_id: object, label: str) -> "Actor":
        return cls(Event.ActorType.API_TOKEN, str(token_id), label, "")

    @classmethod
    def for_product(cls, product: Product) -> "Actor":
        return cls(Event.ActorType.PRODUCT, str(product.pk), product.name, "")

    @property
    def display(self) -> str:
        return self.name or self.email or "Unknown"


SYSTEM = Actor()


@dataclass(frozen=True)
class Location:
    country: str = ""
    region: str = ""
    city: str = ""


def user_item(user: User) -> dict:
    """A context item for an account, names copied so they outlive it."""
    return {"type": "user", "id": str(user.pk), "name": user.name, "email": user.email}


def item(type_: str, id_: object, name: str) -> dict:
    return {"type": type_, "id": str(id_), "name": name}


@dataclass
class EventSpec:
    """One activity to record; see event_record for the meaning of each field."""

    action: str
    actor: Actor = SYSTEM
    occurred_at: datetime | None = None
    product: Product | None = None
    site: Site | None = None
    context: Sequence[Mapping] = ()
    container: Sequence[Mapping] = ()
    details: Mapping[str, object] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str = ""
    location: Location | None = None


@dataclass
class RecordResult:
    event: Event | None
    reason: str = ""

    @property
    def recorded(self) -> bool:
        return self.event is not None


@dataclass
class BatchResult:
    event_ids: list[int]
    skipped: list[tuple[int, str]]  # (index in the batch, why it was not recorded)

    @property
    def recorded(self) -> int:
        return len(self.event_ids)


class _Values(dict):
    """Template values; a field with no value reads as a plain noun ("a page")."""

    def __missing__(self, key: str) -> str:
        return ("an " if key[0] in "aeiou" else "a ") + key


def _activities() -> dict[str, Activity]:
    # The catalogue changes only through migrations; one query per recording call
    # would double the cost of a single event, so it is read once per process.
    global _ACTIVITY_CACHE
    if _ACTIVITY_CACHE is None:
        _ACTIVITY_CACHE = {a.key: a for a in Activity.objects.all()}
    return _ACTIVITY_CACHE


_ACTIVITY_CACHE: dict[str, Activity] | None = None


def activity_cache_clear() -> None:
    global _ACTIVITY_CACHE
    _ACTIVITY_CACHE = None


def activity_for_key(key: str) -> Activity:
    activity = _activities().get(key)
    if activity is None:
        activity_cache_clear()
        activity = _activities().get(key)
    if activity is None:
        raise ValueError(f"Unknown activity {key!r}: add it to audit/catalogue.py")
    return activity


def plan_refusal(plan: Plan, activity: Activity, product: Product | None) -> str:
    """Why `plan` does not record `activity` (for `product`), or "" if it does."""
    if not plan.audit_log:
        return f"The {plan.name} plan does not include the organization audit log."
    category = CATEGORY_BY_KEY[activity.category]
    if not getattr(plan, category.plan_field):
        return f"The {plan.name} plan does not record {category.label.lower()}."
    if activity.user_created and product is not None and not plan.covers_product(product.kind):
        return (
            f"The {plan.name} plan records user-created activity only for "
            f"{plan.user_created_product_kinds.replace(',', ', ')}, not {product.name}."
        )
    return ""


def normalize_term(value: str) -> str:
    return value.strip().lower()


def _terms(actor: Actor, site_name: str, items: Iterable[Mapping]) -> set[str]:
    values = []
    if actor.type == Event.ActorType.USER:
        values += [actor.name, actor.email]
    values.append(site_name)
    for it in items:
        if it.get("type") in SEARCHABLE_TYPES:
            values += [it.get("name") or "", it.get("email") or ""]
    terms = {normalize_term(v) for v in values if v}
    return {t for t in terms if t and len(t) <= MAX_TERM_LENGTH}


def _strip_content(items: Sequence[Mapping]) -> list[dict]:
    return [{"type": it["type"]} if it.get("type") in CONTENT_TYPES else dict(it) for it in items]


EVENT_COLUMNS = (
    "organization_id",
    "occurred_at",
    "recorded_at",
    "action_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "product_id",
    "product_kind",
    "site_name",
    "context",
    "container",
    "content",
    "details",
    "ip",
    "user_agent",
    "country",
    "region",
    "city",
    "message",
)
_JSON_INDEXES = [EVENT_COLUMNS.index(c) for c in ("context", "container", "details")]
_TIME_INDEXES = [EVENT_COLUMNS.index(c) for c in ("occurred_at", "recorded_at")]
_json_encode = DjangoJSONEncoder(separators=(",", ":")).encode


def _db_datetime_adapter():
    """A fast stand-in for connection.ops.adapt_datetimefield_value on aware values."""
    if connection.vendor == "sqlite":
        # Django stores SQLite datetimes as naive UTC text, "YYYY-MM-DD HH:MM:SS[.ffffff]".
        return lambda value: str(value.astimezone(UTC).replace(tzinfo=None))
    return lambda value: value


_PLACEHOLDER = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
_INSERT_ROWS = 500  # rows per INSERT statement: well under both databases' parameter limits


class _Recorder:
    """Applies the rules for one organization; shared by the single and batch paths.

    Rows go to the database as plain INSERTs rather than through bulk_create: the
    ORM's per-field preparation cost several times the database's own work."""

    def __init__(self, organization: Organization):
        self.organization = organization
        self.plan = organization.plan
        self.not_stored = set(
            ActivitySetting.objects.filter(
                organization=organization, content_stored=False
            ).values_list("product_id", flat=True)
        )
        self.now = timezone.now()
        self.product_names: dict[int, str] = {}

    def build(self, spec: EventSpec) -> tuple[dict, set[str]] | str:
        activity = activity_for_key(spec.action)
        refusal = plan_refusal(self.plan, activity, spec.product)
        if refusal:
            return refusal
        product, site = spec.product, spec.site
        if site is None and product is not None:
            site = product.site
        items = [*spec.context, *spec.container]
        content = ""
        if product is not None and product.pk in self.not_stored:
            context, container = _strip_content(spec.context), _strip_content(spec.container)
            items = context + container
        else:
            context, container = list(spec.context), list(spec.container)
            content = next(
                (
                    str(it["name"])
                    for it in items
                    if it.get("type") in CONTENT_TYPES and it.get("name")
                ),
                "",
            )
        actor, location = spec.actor, spec.location or Location()
        site_name = site.name if site is not None else ""
        values = _Values(
            actor=actor.display,
            product=self._product_name(product) if product is not None else "a product",
            site=site_name or "a site",
        )
        if spec.ip:
            values["ip"] = spec.ip
        for it in reversed(items):
            label = it.get("name") or it.get("email") or it.get("id")
            if label:
                values[it["type"]] = label
        for key, value in spec.details.items():
            values[key] = str(value)
        occurred_at = spec.occurred_at or self.now
        if timezone.is_naive(occurred_at):
            raise ValueError("occurred_at must be timezone-aware")
        row = {
            "organization_id": self.organization.pk,
            "occurred_at": occurred_at,
            "recorded_at": self.now,
            "action_id": activity.pk,
            "actor_type": actor.type,
            "actor_id": actor.id,
            "actor_name": actor.name[:200],
            "actor_email": actor.email[:254],
            "product_id": product.pk if product is not None else None,
            "product_kind": product.kind if product is not None else "",
            "site_name": site_name,
            "context": context,
            "container": container,
            "content": content[:500],
            "details": dict(spec.details),
            "ip": spec.ip or None,
            "user_agent": (spec.user_agent or "")[:500],
            "country": location.country,
            "region": location.region,
            "city": location.city,
            "message": activity.template.format_map(values)[:1000],
        }
        return row, _terms(actor, site_name, items)

    def _product_name(self, product: Product) -> str:
        name = self.product_names.get(product.pk)
        if name is None:
            name = self.product_names[product.pk] = product.name
        return name

    def save(self, built: list[tuple[dict, set[str]]]) -> list[int]:
        """Inserts the rows, their search terms and hourly counts; returns the ids.
        Must run inside transaction.atomic()."""
        ids: list[int] = []
        db_time = _db_datetime_adapter()
        table = Event._meta.db_table
        columns = ", ".join(EVENT_COLUMNS)
        rows = []
        for row, _ in built:
            row_params = [row[column] for column in EVENT_COLUMNS]
            for i in _JSON_INDEXES:
                row_params[i] = _json_encode(row_params[i])
            for i in _TIME_INDEXES:
                row_params[i] = db_time(row_params[i])
            rows.append(row_params)
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                # Inside the write transaction no other writer can interleave, so
                # AUTOINCREMENT hands out consecutive ids: executemany is several
                # times faster than a multi-row INSERT ... RETURNING here.
                cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES {_PLACEHOLDER}", rows)
                cursor.execute("SELECT last_insert_rowid()")
                last = cursor.fetchone()[0]
                ids = list(range(last - len(rows) + 1, last + 1))
            else:
                for start in range(0, len(rows), _INSERT_ROWS):
                    chunk = rows[start : start + _INSERT_ROWS]
                    cursor.execute(
                        f"INSERT INTO {table} ({columns}) VALUES "
                        + ", ".join([_PLACEHOLDER] * len(chunk))
                        + " RETURNING id",
                        [value for row_params in chunk for value in row_params],
                    )
                    ids += sorted(r[0] for r in cursor.fetchall())
            org_id = self.organization.pk
            cursor.executemany(
                f"INSERT INTO {EventTerm._meta.db_table} "
                "(organization_id, term, occurred_at, event_id) VALUES (%s, %s, %s, %s)",
                [
                    (org_id, term, occurred_at, event_id)
                    for (row, terms), event_id in zip(built, ids, strict=True)
                    for occurred_at in (db_time(row["occurred_at"]),)
                    for term in terms
                ],
            )
        hours = Counter(
            (
                row["occurred_at"].astimezone(UTC).replace(minute=0, second=0, microsecond=0),
                row["action_id"],
            )
            for row, _ in built
        )
        _hourly_counts_add(org_id, hours)
        return ids


def _hourly_counts_add(org_id: int, hours: Mapping[tuple[datetime, int], int]) -> None:
    if not hours:
        return
    table = EventHourlyCount._meta.db_table
    rows = [
        (org_id, connection.ops.adapt_datetimefield_value(hour), action_id, n)
        for (hour, action_id), n in hours.items()
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {table} (organization_id, hour, action_id, count) "
            "VALUES (%s, %s, %s, %s) "
            f"ON CONFLICT (organization_id, hour, action_id) "
            f"DO UPDATE SET count = {table}.count + excluded.count",
            rows,
        )


def event_record(
    *,
    organization: Organization,
    action: str,
    actor: Actor = SYSTEM,
    occurred_at: datetime | None = None,
    product: Product | None = None,
    site: Site | None = None,
    context: Sequence[Mapping] = (),
    container: Sequence[Mapping] = (),
    details: Mapping[str, object] | None = None,
    ip: str | None = None,
    user_agent: str = "",
    location: Location | None = None,
) -> RecordResult:
    """Record one activity of `organization`.

    `context` lists what was acted on and `container` where, as {type, id, name[, email]}
    items (types: user, group, site, page, issue, space, token, policy, ...). `details`
    fills the message's other fields (old, new, setting, count, ...) and is kept on the
    event. Returns the event, or no event and the reason the plan does not record it.
    """
    spec = EventSpec(
        action=action,
        actor=actor,
        occurred_at=occurred_at,
        product=product,
        site=site,
        context=context,
        container=container,
        details=details or {},
        ip=ip,
        user_agent=user_agent,
        location=location,
    )
    recorder = _Recorder(organization)
    built = recorder.build(spec)
    if isinstance(built, str):
        return RecordResult(None, built)
    row, _ = built
    with transaction.atomic():
        (event_id,) = recorder.save([built])
    event = Event(id=event_id, **row)
    event._state.adding = False
    return RecordResult(event)


def event_record_batch(*, organization: Organization, specs: Iterable[EventSpec]) -> BatchResult:
    """Record many activities of one organization under the same rules as
    event_record, in one transaction per AUDIT_RECORD_BATCH_SIZE events."""
    recorder = _Recorder(organization)
    event_ids: list[int] = []
    skipped: list[tuple[int, str]] = []
    chunk: list[tuple[dict, set[str]]] = []
    size = settings.AUDIT_RECORD_BATCH_SIZE
    for index, spec in enumerate(specs):
        built = recorder.build(spec)
        if isinstance(built, str):
            skipped.append((index, built))
            continue
        chunk.append(built)
        if len(chunk) >= size:
            with transaction.atomic():
                event_ids += recorder.save(chunk)
            chunk = []
    if chunk:
        with transaction.atomic():
            event_ids += recorder.save(chunk)
    return BatchResult(event_ids, skipped)


def request_meta(request: HttpRequest) -> dict:
    """The IP address and user agent to record for an action taken in `request`."""
    ip = request.META.get("REMOTE_ADDR") or None
    if settings.USE_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        ip = forwarded.split(",")[0].strip() or ip
    return {"ip": ip, "user_agent": request.META.get("HTTP_USER_AGENT", "")[:500]}


# Activity settings: whether user-created content is stored, per product.


def stored_label(content_stored: bool) -> str:
    return "Stored" if content_stored else "Not stored"


def activity_setting_refusal(organization: Organization, product: Product | None = None) -> str:
    """Why `organization` may not choose Stored / Not stored (for `product`), or ""."""
    plan = organization.plan
    if not (plan.audit_log and plan.user_created_activity and plan.content_setting):
        return f"The {plan.name} plan does not include user-created activity settings."
    if product is not None and not plan.covers_product(product.kind):
        return f"The {plan.name} plan does not record user-created activity for {product.name}."
    return ""


def activity_setting_update(
    *,
    organization: Organization,
    product: Product,
    content_stored: bool,
    actor_user: User,
    ip: str | None = None,
    user_agent: str = "",
) -> bool:
    """Store or stop storing user-created content for `product` from now on; events
    recorded before keep what they had. Records activity_settings_updated when the
    value changes and returns whether it did. Raises PermissionDenied (changing
    nothing) when the plan does not include the setting for that product."""
    from django.core.exceptions import PermissionDenied

    if product.site.organization_id != organization.pk:
        raise ValueError(f"{product} does not belong to {organization}")
    refusal = activity_setting_refusal(organization, product)
    if refusal:
        raise PermissionDenied(refusal)
    with transaction.atomic():
        setting, _ = ActivitySetting.objects.get_or_create(
            product=product, defaults={"organization": organization}
        )
        # Lock the row so two admins saving at once record the true old value.
        setting = ActivitySetting.objects.select_for_update().get(pk=setting.pk)
        old = setting.content_stored
        if old == content_stored:
            return False
        setting.content_stored = content_stored
        setting.updated_at = timezone.now()
        setting.updated_by = actor_user
        setting.save(update_fields=["content_stored", "updated_at", "updated_by"])
        event_record(
            organization=organization,
            action="activity_settings_updated",
            actor=Actor.for_user(actor_user),
            product=product,
            context=[item("product", product.pk, product.name)],
            details={"old": stored_label(old), "new": stored_label(content_stored)},
            ip=ip,
            user_agent=user_agent,
        )
    return True
