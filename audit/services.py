"""The one way audit events are written.

`event_record` records one activity; `event_record_batch` records many with the same
rules and a fraction of the cost. Both apply the organization's plan (an activity the
plan does not cover is not recorded, and the result says why), the stored / not-stored
setting for user-created content, copy names into the row, render the message, fill
the exact-term search index and the hourly counts, and stamp the recorded time.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from orgs.models import Organization, Plan, Product, Site, User

from .models import ActivitySetting, Event
from .recording import (  # noqa: F401 - public names callers import from here
    Prepared,
    Recorder,
    activity_cache_clear,
    activity_for_key,
    event_ids_draw,
    ip_valid,
    normalize_term,
    plan_refusal,
    record_specs,
    term_hash,
)


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
# Whoever failed to sign in is unknown: the account the attempt named is the context.
ANONYMOUS = Actor(Event.ActorType.ANONYMOUS, "", "Anonymous", "")


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
    plan: Plan | None = None,
) -> RecordResult:
    """Record one activity of `organization`.

    `context` lists what was acted on and `container` where, as {type, id, name[, email]}
    items (types: user, group, site, page, issue, space, token, policy, ...). `details`
    fills the message's other fields (old, new, setting, count, ...) and is kept on the
    event. Returns the event, or no event and the reason the plan does not record it.
    `plan` rules instead of the organization's current one (a plan change is recorded
    under whichever of the old and new plans keeps a log).
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
    recorder = Recorder(organization, single=True, plan=plan)
    built = recorder.build(spec)
    if isinstance(built, str):
        return RecordResult(None, built)
    with transaction.atomic():
        (event_id,) = recorder.save([built])
    event = Event(id=event_id, **recorder.row(built))
    event._state.adding = False
    return RecordResult(event)


def event_batch_prepare(*, organization: Organization, specs: Iterable[EventSpec]) -> Prepared:
    """Many activities of one organization built under the same rules as event_record,
    to be written (Prepared.save) inside the caller's transaction."""
    return Prepared(organization, specs)


def event_record_batch(*, organization: Organization, specs: Iterable[EventSpec]) -> BatchResult:
    """Record many activities of one organization under the same rules as
    event_record, in one transaction per AUDIT_RECORD_BATCH_SIZE events."""
    return BatchResult(*record_specs(organization, specs, settings.AUDIT_RECORD_BATCH_SIZE))


def client_ip(request: HttpRequest) -> str | None:
    """The one place the client's address is read from a request (django-axes too).

    TRUSTED_PROXY_COUNT = 0: the socket's address (REMOTE_ADDR); X-Forwarded-For and the
    like are ignored, since any client can send them. N > 0 (N proxies in front, each
    appending the address it received the request from): the Nth entry from the right
    of X-Forwarded-For, the address the outermost trusted proxy saw; whatever a client
    put in front of it is never looked at. Fewer than N entries, or that entry not an
    address: no address. (Not django-ipware: it skips entries that do not parse before
    counting, which moves the position onto one a client wrote.)"""
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return ip_valid(request.META.get("REMOTE_ADDR"))
    chain = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    return ip_valid(chain[-proxies]) if len(chain) >= proxies else None


def request_meta(request: HttpRequest) -> dict:
    """The IP address and user agent to record for an action taken in `request`."""
    return {"ip": client_ip(request), "user_agent": request.META.get("HTTP_USER_AGENT", "")[:500]}


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
