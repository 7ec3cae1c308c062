"""Streams: an organization's events POSTed to up to 3 destinations as they are
recorded (README, "Streaming"). The services an admin or operator calls (create, edit,
pause, resume, delete, rotate the secret, send a test event), each recorded in the
audit log, and the delivery the worker runs.

Design. Recording writes nothing for streams: each stream keeps one durable position
(cursor_txid, cursor_id) in the events stream's recording order, and delivery reads
the next events past it with audit.selectors.event_stream_slice, the REST events
stream's own reader. That reader serves only events whose transaction is older than
every one still running (pg_snapshot_xmin), so an event committed late is not skipped:
the cursor cannot pass it before it commits. The cursor moves only after a 2xx, so a
batch is sent again until it is accepted: at least once, in order; receivers dedupe by
event id (or by the Idempotency-Key, the same for a batch sent again). It is written
at most every STREAM_FLUSH_SECONDS while a stream delivers (Delivery): a worker that
dies sends up to that much again, never less.

One delivery loop at a time per stream: a loop takes a lease on a stream with one
conditional UPDATE (free or already its own), renews it once half has run and checks
it on every cursor write, so two workers or two clusters never deliver one stream at
once.
The loop (audit.tasks.streams_deliver) polls every STREAM_POLL seconds for up to
STREAM_LOOP_SECONDS, each stream in a thread of its own so a slow destination holds up
no other, then hands over to a fresh task; a schedule starts one every minute in case
a worker died, and creating or resuming a stream starts one at once."""

import json
import logging
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import connections, transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from orgs.models import Membership, Organization, Product

from .catalogue import CATEGORY_BY_KEY
from .delivery import USER_AGENT, DestinationRefused, Sender, destination_check, signature_header
from .models import Activity, Event, Stream, StreamAttempt
from .selectors import (
    EVENT_JSON_FIELDS,
    StreamPosition,
    event_json,
    event_row_json,
    event_stream_rows,
    event_stream_slice,
    stream_position_now,
)
from .services import SYSTEM, Actor, event_record, item

log = logging.getLogger(__name__)

BATCH_SIZE = 100
SCAN_SIZE = 1000  # events read at once (up to ten batches; filtered: maybe fewer)
ATTEMPTS_KEPT = 100
BURST_SECONDS = 5.0  # one thread delivers one stream this long, then the loop looks again
THREADS = 8
COMMAND_LINE = Actor(name="Command line")


class StreamRefused(ValueError):
    """A stream change that is not allowed; the message says why."""


@dataclass(frozen=True)
class Author:
    """Who changes a stream and from where: recorded with the change."""

    actor: Actor = COMMAND_LINE
    ip: str | None = None
    user_agent: str = ""
    user: object = None


def stream_refusal(organization: Organization) -> str:
    """Why `organization` may not stream now, or ""."""
    plan = organization.plan
    if not (plan.audit_log and plan.streaming and plan.max_webhooks):
        return f"The {plan.name} plan does not include streaming."
    return ""


def stream_limit_refusal(organization: Organization) -> str:
    """Why `organization` may not add a stream now (plan, limit), or ""."""
    if refusal := stream_refusal(organization):
        return refusal
    limit = organization.plan.max_webhooks
    if Stream.objects.filter(organization=organization).count() >= limit:
        return (
            f"Your organization has {limit} stream{'s' if limit != 1 else ''}, the most the "
            f"{organization.plan.name} plan allows. Delete one to add another."
        )
    return ""


def _secret() -> str:
    return "whsec_" + secrets.token_hex(32)


def _record(stream: Stream, action: str, by: Author, **details) -> Event | None:
    return event_record(
        organization=stream.organization,
        action=action,
        actor=by.actor,
        context=[item("webhook", stream.pk, stream.name)],
        details=details,
        ip=by.ip,
        user_agent=by.user_agent,
    ).event


def _filters_clean(categories: Iterable[str], product_kinds: Iterable[str]) -> tuple[list, list]:
    categories, product_kinds = list(dict.fromkeys(categories)), list(dict.fromkeys(product_kinds))
    if unknown := [c for c in categories if c not in CATEGORY_BY_KEY]:
        raise StreamRefused(f"Unknown activity category: {', '.join(unknown)}.")
    if unknown := [k for k in product_kinds if k not in Product.Kind.values]:
        raise StreamRefused(f"Unknown product: {', '.join(unknown)}.")
    return categories, product_kinds


def _name_clean(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise StreamRefused("A stream needs a name.")
    return name[:100]


def _url_clean(url: str) -> str:
    url = (url or "").strip()
    try:
        destination_check(url)
    except DestinationRefused as exc:
        raise StreamRefused(str(exc)) from exc
    return url


def stream_create(
    *,
    organization: Organization,
    name: str,
    url: str,
    authorization: str = "",
    categories: Iterable[str] = (),
    product_kinds: Iterable[str] = (),
    by: Author,
) -> tuple[Stream, str]:
    """A new, enabled stream of `organization` and its signing secret, which is shown
    once. It receives the events recorded from now on. Records audit_log_webhook_created.
    Raises StreamRefused (plan, limit, name, URL, filters)."""
    name, url = _name_clean(name), _url_clean(url)
    categories, product_kinds = _filters_clean(categories, product_kinds)
    with transaction.atomic():
        # One at a time per organization, so two admins cannot pass the limit together.
        Organization.objects.select_for_update().filter(pk=organization.pk).first()
        if refusal := stream_limit_refusal(organization):
            raise StreamRefused(refusal)
        txid, pk = stream_position_now()
        secret = _secret()
        stream = Stream.objects.create(
            organization=organization,
            name=name,
            url=url,
            authorization=(authorization or "").strip(),
            categories=categories,
            product_kinds=product_kinds,
            secret=secret,
            cursor_txid=txid,
            cursor_id=pk,
            created_by=by.user,
        )
        _record(stream, "audit_log_webhook_created", by)
        transaction.on_commit(deliver_soon)
    return stream, secret


def stream_update(
    *,
    stream: Stream,
    name: str,
    url: str,
    authorization: str | None,
    categories: Iterable[str],
    product_kinds: Iterable[str],
    by: Author,
) -> list[str]:
    """Saves an edit; `authorization` None keeps the header value, "" removes it.
    Records audit_log_webhook_updated naming what changed; returns those names."""
    values = {
        "name": _name_clean(name),
        "url": _url_clean(url) if url != stream.url else url,
        "categories": None,
        "product_kinds": None,
    }
    values["categories"], values["product_kinds"] = _filters_clean(categories, product_kinds)
    if authorization is not None:
        values["authorization"] = authorization.strip()
    labels = {"name": "name", "url": "URL", "authorization": "Authorization header"}
    labels |= {"categories": "activity filter", "product_kinds": "product filter"}
    changed = [field for field, value in values.items() if getattr(stream, field) != value]
    if not changed:
        return []
    with transaction.atomic():
        Stream.objects.filter(pk=stream.pk).update(**{f: values[f] for f in changed})
        for field in changed:
            setattr(stream, field, values[field])
        what = ", ".join(labels[f] for f in changed)
        _record(stream, "audit_log_webhook_updated", by, changed=what)
    return [labels[f] for f in changed]


def stream_pause(*, stream: Stream, by: Author) -> bool:
    """Stops delivery until resumed (the cursor stays). False if already paused."""
    with transaction.atomic():
        name = getattr(by.actor, "display", "an admin")
        paused = Stream.objects.filter(pk=stream.pk, enabled=True).update(
            enabled=False, paused_reason=f"Paused by {name}.", lease_owner="", lease_until=None
        )
        if paused:
            _record(stream, "audit_log_webhook_disabled", by)
    stream.refresh_from_db()
    return bool(paused)


def stream_resume(*, stream: Stream, by: Author) -> bool:
    """Delivers again from where the stream stopped: everything it missed, in order.
    False if it was not paused."""
    with transaction.atomic():
        resumed = Stream.objects.filter(pk=stream.pk, enabled=False).update(
            enabled=True,
            paused_reason="",
            failures=0,
            first_failure_at=None,
            next_attempt_at=None,
        )
        if resumed:
            _record(stream, "audit_log_webhook_enabled", by)
            transaction.on_commit(deliver_soon)
    stream.refresh_from_db()
    return bool(resumed)


def stream_delete(*, stream: Stream, by: Author) -> None:
    with transaction.atomic():
        _record(stream, "audit_log_webhook_deleted", by)
        stream.delete()


def stream_secret_rotate(*, stream: Stream, by: Author) -> str:
    """A new signing secret (shown once); the old one also signs for
    STREAM_SECRET_GRACE_HOURS, so receivers can switch without losing a batch."""
    secret = _secret()
    until = timezone.now() + timedelta(hours=settings.STREAM_SECRET_GRACE_HOURS)
    with transaction.atomic():
        Stream.objects.filter(pk=stream.pk).update(
            secret=secret, previous_secret=stream.secret, previous_secret_until=until
        )
        _record(stream, "audit_log_webhook_secret_rotated", by)
    stream.refresh_from_db()
    return secret


def stream_test(*, stream: Stream, by: Author) -> None:
    """Records audit_log_webhook_tested and has the worker send that event to the
    destination at once, outside the cursor (it arrives again in order later)."""
    from django_q.tasks import async_task

    with transaction.atomic():
        event = _record(stream, "audit_log_webhook_tested", by)
        event_id = event.pk if event is not None else None
        transaction.on_commit(
            lambda: async_task("audit.tasks.stream_test_send", stream.pk, event_id)
        )


def deliver_soon() -> None:
    """Starts a delivery loop now rather than at the next minute's schedule. Not with
    Q_SYNC (tests): the loop would run inside the request for a minute."""
    from django_q.conf import Conf
    from django_q.tasks import async_task

    if not Conf.SYNC:
        async_task("audit.tasks.streams_deliver", task_name="streams-deliver-soon")


# -- delivery ------------------------------------------------------------------------------


def _action_ids(categories: list[str]) -> set[int]:
    return set(Activity.objects.filter(category__in=categories).values_list("pk", flat=True))


def stream_batch(stream: Stream) -> tuple[list[Event], StreamPosition | None]:
    """The next events to send (at most BATCH_SIZE, in recording order) and the
    position the cursor moves to once they are accepted; no position: nothing new.
    With filters, events that do not match are passed over (no events, a position)."""
    org = stream.organization
    after = (stream.cursor_txid, stream.cursor_id)
    if not (stream.categories or stream.product_kinds):
        return event_stream_slice(org, after, limit=BATCH_SIZE)
    rows, last = event_stream_slice(org, after, limit=SCAN_SIZE)
    actions = _action_ids(stream.categories) if stream.categories else None
    matched = []
    for event in rows:
        if actions is not None and event.action_id not in actions:
            continue
        if stream.product_kinds and event.product_kind not in stream.product_kinds:
            continue
        matched.append(event)
        if len(matched) == BATCH_SIZE:
            return matched, (event.txid or 0, event.pk)
    return matched, last


def stream_lag(stream: Stream, now: datetime | None = None) -> timedelta | None:
    """How long the oldest event not yet delivered has waited (None: none waits)."""
    events, _ = stream_batch(stream)
    if not events:
        return None
    return max((now or timezone.now()) - events[0].recorded_at, timedelta(0))


def lag_text(lag: timedelta | None) -> str:
    """ "3 s", "4 min", "2 h 5 min"; "" when nothing waits."""
    if lag is None:
        return ""
    seconds = int(lag.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _headers(stream: Stream, body: bytes, batch_id: str, now: datetime) -> dict[str, str]:
    signing = [stream.secret]
    if (
        stream.previous_secret
        and stream.previous_secret_until
        and stream.previous_secret_until > now
    ):
        signing.append(stream.previous_secret)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": batch_id,
        "X-Audit-Batch-Id": batch_id,
        "X-Audit-Stream-Id": str(stream.pk),
        "X-Audit-Signature": signature_header(body, signing, now.timestamp()),
    }
    if stream.authorization:
        headers["Authorization"] = stream.authorization
    return headers


def _body(stream: Stream, events: list[Event], batch_id: str, test: bool = False) -> bytes:
    payload = {
        "data": [event_json(e) for e in events],
        "meta": {"stream": str(stream.pk), "batch": batch_id, "test": test},
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _batch_key(stream_id: int, first_id: int, last_id: int, size: int) -> str:
    """The same id each time the same batch is sent (an idempotency key)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stream_id}:{first_id}:{last_id}:{size}"))


def _attempt_save(stream: Stream, events: list[Event], batch_id: str, response, **extra) -> None:
    """Logs one send outside the delivery loop (a test event)."""
    _attempts_write(
        stream,
        [
            _attempt(
                stream,
                batch_id,
                response,
                len(events),
                events[0].pk if events else None,
                events[-1].pk if events else None,
                **extra,
            )
        ],
    )


def _attempt(stream, batch_id, response, size, first_id, last_id, **extra) -> StreamAttempt:
    return StreamAttempt(
        stream=stream,
        started_at=timezone.now() - timedelta(milliseconds=response.latency_ms),
        batch_id=batch_id,
        status_code=response.status,
        error=response.error,
        batch_size=size,
        latency_ms=response.latency_ms,
        first_event_id=first_id,
        last_event_id=last_id,
        **extra,
    )


def _attempts_write(stream: Stream, attempts: list[StreamAttempt]) -> None:
    """Saves `attempts` and keeps the stream's last ATTEMPTS_KEPT."""
    if not attempts:
        return
    StreamAttempt.objects.bulk_create(attempts)
    older = (
        StreamAttempt.objects.filter(stream=stream)
        .order_by("-id")
        .values_list("id", flat=True)[ATTEMPTS_KEPT : ATTEMPTS_KEPT + 1]
    )
    if older:
        StreamAttempt.objects.filter(stream=stream, id__lte=older[0]).delete()


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


SENT, MOVED, IDLE, FAILED, WAITING, LOST = "sent", "moved", "idle", "failed", "waiting", "lost"
_FIELDS = (*EVENT_JSON_FIELDS, "action__key", "action_id", "product_kind")


@dataclass
class Batch:
    """The next events of a stream, ready to send: `size` events (0: only events the
    filters pass over), the JSON body and the position the cursor moves to once they
    are accepted."""

    position: StreamPosition
    size: int = 0
    first_id: int | None = None
    last_id: int | None = None
    batch_id: str = ""
    body: bytes = b""


def batches_read(
    stream: Stream, after: StreamPosition, actions: set[int] | None
) -> tuple[list[Batch], bool]:
    """The next batches past `after`, from one read of up to SCAN_SIZE events, each
    serialized and ready to send ([]: nothing new), and whether the read was full
    (more are likely waiting). One read for up to ten batches: on SQLite, fewer,
    shorter reads leave the recorder's checkpoints alone. `actions`: the action ids
    the stream's activity filter lets through (None: all)."""
    rows, last = event_stream_rows(stream.organization, after, limit=SCAN_SIZE, fields=_FIELDS)
    if last is None:
        return [], False
    full = len(rows) == SCAN_SIZE
    if actions is not None or stream.product_kinds:
        kinds = stream.product_kinds
        rows = [
            row
            for row in rows
            if (actions is None or row["action_id"] in actions)
            and (not kinds or row["product_kind"] in kinds)
        ]
    batches = [_batch(stream, rows[i : i + BATCH_SIZE]) for i in range(0, len(rows), BATCH_SIZE)]
    if not batches or batches[-1].position != last:  # the filters passed over the rest
        batches.append(Batch(last))
    return batches, full


def _batch(stream: Stream, rows: list[dict]) -> Batch:
    first_id, last_id, site_url = rows[0]["id"], rows[-1]["id"], settings.SITE_URL
    batch_id = _batch_key(stream.pk, first_id, last_id, len(rows))
    payload = {
        "data": [event_row_json(row, site_url=site_url) for row in rows],
        "meta": {"stream": str(stream.pk), "batch": batch_id, "test": False},
    }
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    position = (rows[-1]["txid"] or 0, last_id)
    return Batch(position, len(rows), first_id, last_id, batch_id, body)


class Delivery:
    """One stream's delivery under lease `token`, batch after batch, in order.

    The cursor and the attempts are kept in memory and written together at most once
    every STREAM_FLUSH_SECONDS, when a batch fails, and when the delivery stops
    (flush(), which stream_deliver_burst always calls): a write per batch would take
    SQLite's one write lock fifty times a second from the recorder. A worker that dies
    between two flushes leaves the cursor up to that interval behind: those batches
    are sent again (at least once; same Idempotency-Key; order kept), none skipped.
    Each flush moves the cursor only while `token` still holds the stream (lease) and
    the stream is enabled, so a paused or taken-over stream stops within the interval.

    Events are read up to ten batches at a time; while those are on the wire the next
    ones are read and serialized in a second thread (read-ahead), so the database and
    the receiver work at the same time."""

    def __init__(self, stream: Stream, sender: Sender, token: str):
        self.stream, self.sender, self.token = stream, sender, token
        self.position: StreamPosition = (stream.cursor_txid, stream.cursor_id)
        self.actions = _action_ids(stream.categories) if stream.categories else None
        self.attempts: list[StreamAttempt] = []
        self.moved = False  # the position is ahead of the written cursor
        self.success_at: datetime | None = None
        self.flushed = time.monotonic()
        self.lost = False
        self._ahead = None  # the read-ahead thread, made when a full batch is seen

    def run(self, seconds: float) -> str:
        """Sends batches for up to `seconds`, until caught up, a failure or a lost
        lease; returns the outcome of the last step."""
        deadline = time.monotonic() + seconds
        batches, full = batches_read(self.stream, self.position, self.actions)
        outcome = IDLE
        try:
            while batches and time.monotonic() < deadline:
                following = self._read_ahead(batches[-1].position) if full else None
                for batch in batches:
                    outcome = self.send(batch)
                    if outcome not in (SENT, MOVED):
                        return outcome
                if following is not None:
                    batches, full = following.result()
                else:
                    batches, full = batches_read(self.stream, self.position, self.actions)
            return outcome if batches else IDLE
        finally:
            if self._ahead is not None:
                self._ahead.submit(connections.close_all)  # the thread's own connection
                self._ahead.shutdown(wait=True)

    def _read_ahead(self, after: StreamPosition) -> Future:
        if self._ahead is None:
            self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-read")
        return self._ahead.submit(batches_read, self.stream, after, self.actions)

    def send(self, batch: Batch) -> str:
        """Sends `batch`; on a 2xx moves the position (written at the next flush); on a
        failure, flushes, then backs off or pauses."""
        if batch.size:
            now = timezone.now()
            response = self.sender.post(
                batch.body, _headers(self.stream, batch.body, batch.batch_id, now)
            )
            attempt = _attempt(
                self.stream, batch.batch_id, response, batch.size, batch.first_id, batch.last_id
            )
            if not _ok(response.status):
                return self._failed(response, attempt)
            self.attempts.append(attempt)
            self.success_at = timezone.now()
        self.position, self.moved = batch.position, True
        if time.monotonic() - self.flushed >= settings.STREAM_FLUSH_SECONDS:
            if not self.flush():
                return LOST
        return SENT if batch.size else MOVED

    def flush(self) -> bool:
        """Writes the position and the attempts since the last flush; False if the
        lease was lost or the stream paused (nothing is written then)."""
        self.flushed = time.monotonic()
        if self.lost:
            return False
        if not (self.moved or self.attempts):
            return True
        fields = {"cursor_txid": self.position[0], "cursor_id": self.position[1]}
        if self.success_at is not None:
            fields |= {"failures": 0, "first_failure_at": None, "next_attempt_at": None}
            fields |= {"last_error": "", "last_success_at": self.success_at}
        with transaction.atomic():
            if not self._update(fields):
                self.lost = True
                return False
            _attempts_write(self.stream, self.attempts)
        self.attempts, self.moved, self.success_at = [], False, None
        return True

    def _update(self, fields: dict) -> bool:
        stream = self.stream
        held = Stream.objects.filter(pk=stream.pk, lease_owner=self.token, enabled=True)
        if not held.update(**fields):
            return False
        for field, value in fields.items():
            setattr(stream, field, value)
        return True

    def _failed(self, response, attempt: StreamAttempt) -> str:
        if not self.flush():
            return LOST
        with transaction.atomic():
            outcome = _failure(self.stream, response, self.token)
            if outcome == LOST:
                self.lost = True
                return LOST
            _attempts_write(self.stream, [attempt])
        return outcome


def stream_deliver_burst(stream_id: int, token: str, seconds: float = BURST_SECONDS) -> str:
    """Delivers one stream held under lease `token` batch after batch, for up to
    `seconds`, until it is caught up, waits for a retry, fails or is paused; what it
    sent is written (flushed) before it returns, whatever happened."""
    stream = (
        Stream.objects.select_related("organization__plan")
        .filter(pk=stream_id, lease_owner=token, enabled=True)
        .first()
    )
    if stream is None:
        return LOST
    if stream.next_attempt_at and stream.next_attempt_at > timezone.now():
        return WAITING
    sender = Sender(stream.url)  # resolved and checked again on its first send
    delivery = Delivery(stream, sender, token)
    try:
        outcome = delivery.run(seconds)
    finally:
        try:
            flushed = delivery.flush()
        finally:
            sender.close()
    return outcome if flushed or outcome not in (SENT, MOVED, IDLE) else LOST


def _failure(stream: Stream, response, token: str) -> str:
    """Counts a failed delivery: pauses at once on 410 Gone, after
    STREAM_PAUSE_AFTER_FAILURES failures spanning STREAM_PAUSE_AFTER_MINUTES, else
    waits 1 s, 2 s, 4 s ... (at most STREAM_RETRY_MAX_SECONDS), with jitter."""
    now = timezone.now()
    failures = stream.failures + 1
    first = stream.first_failure_at or now
    error = response.error or f"HTTP {response.status}"
    reason = ""
    if response.status == 410:
        reason = "the receiver answered 410 Gone."
    elif failures >= settings.STREAM_PAUSE_AFTER_FAILURES and now - first >= timedelta(
        minutes=settings.STREAM_PAUSE_AFTER_MINUTES
    ):
        since = f"{first:%Y-%m-%d %H:%M} UTC"
        reason = f"{failures} deliveries in a row failed since {since} (last: {error})."
    delay = min(2 ** min(failures - 1, 30), settings.STREAM_RETRY_MAX_SECONDS)
    fields = {
        "failures": failures,
        "first_failure_at": first,
        "last_error": error[:300],
        "next_attempt_at": now + timedelta(seconds=delay * random.uniform(0.5, 1.0)),
    }
    if reason:
        fields |= {"enabled": False, "paused_reason": f"Paused: {reason}", "next_attempt_at": None}
    if not Stream.objects.filter(pk=stream.pk, lease_owner=token, enabled=True).update(**fields):
        return LOST
    for field, value in fields.items():
        setattr(stream, field, value)
    if reason:
        _paused_by_failures(stream, reason)
        return "paused"
    return FAILED


def _paused_by_failures(stream: Stream, reason: str) -> None:
    _record(stream, "audit_log_webhook_paused", Author(actor=SYSTEM), reason=reason)
    transaction.on_commit(lambda: _paused_email(stream.pk, reason))


def _paused_email(stream_id: int, reason: str) -> None:
    stream = Stream.objects.select_related("organization").filter(pk=stream_id).first()
    if stream is None:
        return
    admins = Membership.objects.filter(
        organization=stream.organization, role=Membership.Role.ADMIN
    ).values_list("user__email", flat=True)
    context = {"stream": stream, "reason": reason, "site_url": settings.SITE_URL}
    try:
        send_mail(
            f"Streaming to {stream.name} was paused",
            render_to_string("audit/email/stream_paused.txt", context),
            None,
            list(admins),
        )
    except OSError:
        log.exception(
            "could not email the admins of %s that stream %s paused", stream.organization, stream.pk
        )


def stream_test_send(stream_id: int, event_id: int | None) -> str:
    """Sends one event (the test event) to the stream now, whatever its state; logs
    the attempt. Returns its outcome."""
    stream = Stream.objects.select_related("organization__plan").filter(pk=stream_id).first()
    if stream is None:
        return "deleted"
    events = list(Event.objects.select_related("action").filter(pk=event_id))
    batch_id = str(uuid.uuid4())
    body = _body(stream, events, batch_id, test=True)
    sender = Sender(stream.url)
    try:
        response = sender.post(body, _headers(stream, body, batch_id, timezone.now()))
    finally:
        sender.close()
    _attempt_save(stream, events, batch_id, response, is_test=True)
    return response.error or str(response.status)


def leases_take(token: str, now: datetime | None = None) -> list[int]:
    """Takes the lease on every enabled stream that is free, renews those `token`
    holds once half their lease has run (not at every poll: on SQLite each write takes
    the recorder's lock), and returns the ids of those `token` holds. One UPDATE:
    atomic on both databases."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.STREAM_LEASE_SECONDS)
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    ours = Q(lease_owner=token)
    candidates = list(
        Stream.objects.filter(
            free | ours,
            enabled=True,
            organization__plan__streaming=True,
            organization__plan__audit_log=True,
        ).values_list("pk", flat=True)
    )
    if not candidates:
        return []
    # The conditions again on the rows themselves, without a join: PostgreSQL re-checks
    # them on a row another loop has just leased (a subquery would not be re-checked).
    due = free | (ours & Q(lease_until__lt=now + lease / 2))
    Stream.objects.filter(due, enabled=True, pk__in=candidates).update(
        lease_owner=token, lease_until=now + lease
    )
    held = Stream.objects.filter(ours, enabled=True, pk__in=candidates)
    return list(held.values_list("pk", flat=True))


def leases_release(token: str) -> None:
    Stream.objects.filter(lease_owner=token).update(lease_owner="", lease_until=None)


def _burst_thread(stream_id: int, token: str) -> str:
    try:
        return stream_deliver_burst(stream_id, token)
    except Exception:
        log.exception("stream %s: delivery failed", stream_id)
        return FAILED
    finally:
        connections.close_all()  # this thread's connections only


def lease_token() -> str:
    """A delivery loop's name on the streams it holds (Stream.lease_owner): host, pid and
    a random part, so whoever looks (the admin, a test) can tell which worker holds it."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def _pause(poll: float, bursts: list[Future]) -> None:
    """Waits `poll` seconds, less if a burst ends with more to send: it is started
    again at once rather than at the next poll (a backlog is sent without gaps)."""
    end = time.monotonic() + poll
    pending = [f for f in bursts if not f.done()]
    while pending:
        done, _ = wait(
            pending, timeout=max(0.0, end - time.monotonic()), return_when=FIRST_COMPLETED
        )
        if any(f.result() in (SENT, MOVED) for f in done):
            return
        pending = [f for f in pending if f not in done]
        if time.monotonic() >= end:
            return
    time.sleep(max(0.0, end - time.monotonic()))


def streams_deliver_loop(
    *, seconds: float | None = None, poll: float | None = None
) -> dict[str, int | bool]:
    """Delivers every stream this loop can lease, polling, for up to `seconds`
    (STREAM_LOOP_SECONDS). Returns how it went; `handover`: another loop should
    follow (no other loop holds a stream)."""
    seconds = settings.STREAM_LOOP_SECONDS if seconds is None else seconds
    poll = settings.STREAM_POLL if poll is None else poll
    token, rounds = lease_token(), 0
    deadline = time.monotonic() + seconds
    running: dict[int, Future] = {}
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="stream") as pool:
        try:
            while True:
                held = leases_take(token)
                running = {pk: f for pk, f in running.items() if not f.done()}
                if not held and not running:
                    break
                for pk in held:
                    if pk not in running:
                        running[pk] = pool.submit(_burst_thread, pk, token)
                rounds += 1
                if time.monotonic() >= deadline:
                    break
                _pause(poll, list(running.values()))
        finally:
            for future in running.values():
                future.result()
            leases_release(token)
    others = Stream.objects.filter(lease_until__gt=timezone.now()).exists()
    enabled = Stream.objects.filter(enabled=True).exists()
    return {"rounds": rounds, "handover": bool(rounds) and enabled and not others}
