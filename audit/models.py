import json
import re

import orjson
from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from orgs.models import Organization, Product

from .catalogue import CATEGORIES, CATEGORY_BY_KEY


class AppendOnlyError(Exception):
    """Raised on any attempt to change or remove an audit event through the ORM."""


class Activity(models.Model):
    """One row per action of the catalogue (audit/catalogue.py), made by migration."""

    key = models.SlugField(max_length=64, unique=True)
    label = models.CharField(max_length=120)
    category = models.CharField(max_length=32, choices=[(c.key, c.label) for c in CATEGORIES])
    user_created = models.BooleanField(default=False)
    template = models.CharField(max_length=300)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        verbose_name_plural = "activities"

    def __str__(self) -> str:
        return self.label

    @property
    def category_label(self) -> str:
        return CATEGORY_BY_KEY[self.category].label


class ActivitySetting(models.Model):
    """Whether an organization stores user-created content for one product.
    No row means Stored, the default."""

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="activity_settings"
    )
    product = models.OneToOneField(
        Product, on_delete=models.CASCADE, related_name="activity_setting"
    )
    content_stored = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"{self.product}: {'Stored' if self.content_stored else 'Not stored'}"


_LONG_DIGITS = re.compile(r"\d{19}").search


class TrustedJSONField(models.JSONField):
    """JSON written only by the recording service's own encoder: SQLite's per-row
    JSON_VALID check would re-parse every value it has just been given. Read back by
    orjson, which gives the same values as json.loads several times faster (a search's
    page re-checks the context, container and details of every event it shows, the API
    returns them: a few hundred values a request). Django's json.loads reads what orjson
    refuses (NaN) and any text with a run of 19 digits or more, which may be an integer
    past 64 bits that orjson would turn into a float."""

    def db_check(self, connection):
        return None

    def from_db_value(self, value, expression, connection):
        if isinstance(value, str) and self.decoder is None and not _LONG_DIGITS(value):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        return super().from_db_value(value, expression, connection)


# A dict, not `kind in Product.Kind` and Product.Kind(kind).label: the page asks it for
# every row, and the enum's lookups are slow.
_PRODUCT_KIND_LABELS = {str(kind): label for kind, label in Product.Kind.choices}


class EventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError("Audit events are append-only: they cannot be updated.")

    def delete(self):
        raise AppendOnlyError("Audit events are append-only: only the retention job removes them.")

    def bulk_update(self, *args, **kwargs):
        raise AppendOnlyError("Audit events are append-only: they cannot be updated.")


class Event(models.Model):
    """One activity, written once by audit.services and never changed.

    Actor, product and site are copied into the row rather than referenced, so an
    event outlives the account, product or site it names."""

    class ActorType(models.TextChoices):
        USER = "user", "User"
        API_TOKEN = "api_token", "API token"
        PRODUCT = "product", "Product"
        SYSTEM = "system", "System"
        ANONYMOUS = "anonymous", "Anonymous"  # not signed in: a failed sign-in, a lockout

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField()
    action = models.ForeignKey(Activity, on_delete=models.PROTECT, related_name="+", db_index=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_name = models.CharField(max_length=200, blank=True)
    actor_email = models.CharField(max_length=254, blank=True)
    product_id = models.BigIntegerField(null=True, blank=True)
    product_kind = models.CharField(max_length=40, blank=True)
    site_name = models.CharField(max_length=253, blank=True)
    context = TrustedJSONField(default=list, blank=True)
    container = TrustedJSONField(default=list, blank=True)
    content = models.CharField(max_length=500, blank=True)
    details = TrustedJSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    country = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True)
    city = models.CharField(max_length=100, blank=True)
    message = models.CharField(max_length=1000)
    # PostgreSQL: the id of the transaction that recorded the event, filled by the
    # column's default (migration 0011). The events stream reads in (txid, id) order and
    # only below the oldest transaction still running, so an event committed late is
    # never skipped (README, "The events stream"). SQLite: null; ids are in commit order.
    txid = models.BigIntegerField(null=True, blank=True, editable=False)
    # SHA-256 of the event's canonical serialization (audit.verify.event_canonical),
    # computed by the recorder as it writes the row. Null for events recorded before
    # migration 0014: sealing hashes those from their row (audit.integrity).
    hash = models.BinaryField(max_length=32, null=True, blank=True, editable=False)

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "occurred_at", "id"], name="event_org_time"),
            models.Index(
                fields=["organization", "action", "occurred_at", "id"], name="event_org_action_time"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.message}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("Audit events are append-only: they cannot be updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("Audit events are append-only: only the retention job removes them.")

    @property
    def product_name(self) -> str:
        return _PRODUCT_KIND_LABELS.get(self.product_kind, self.product_kind)


class EventIds(models.Field):
    """A list of event ids: bigint[] on PostgreSQL, a JSON array (text) on SQLite."""

    description = "Event ids"

    def db_type(self, connection) -> str:
        return "bigint[]" if connection.vendor == "postgresql" else "text"

    def from_db_value(self, value, expression, connection):
        if value is None or isinstance(value, list):
            return value
        return json.loads(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        if connection.vendor == "postgresql":
            return list(value)
        return json.dumps(list(value), separators=(",", ":"))


class EventTerm(models.Model):
    """The exact-term search index: a normalized (lower-cased, trimmed) user name,
    email, group name or site name with the events that carry it, filled at write time.

    One row holds a term's events of one recording batch within one UTC day, at most
    audit.recording.TERM_ROW_EVENTS of them, in (occurred_at, id) order (`event_ids`),
    and is keyed by its newest: `occurred_at` and `event` are that event's, `oldest_at`
    the oldest's time. A row of one event (what a single event_record writes) leaves
    `oldest_at` and `event_ids` NULL (they would repeat its time and id): it then
    takes no more room than a row per term and event did. A row is written once, by
    the batch, and never updated (the append-only guard); the retention job removes it
    once every event it names is gone.
    Rows rather than one per term and event: PostgreSQL spends ~56 bytes of headers on
    every row and its key entry, which a row of many events pays once (migration 0017;
    README "Search terms"). The search walks the key newest first (audit.selectors).

    The term is stored as its 64-bit hash (audit.recording.term_hash), not its text.
    Two terms may share a hash, so a search re-checks each event it finds
    (audit.selectors.event_carries_term) and a collision never shows a wrong row.

    No foreign-key constraints or extra indexes: each would cost every write."""

    pk = models.CompositePrimaryKey("organization", "term_hash", "occurred_at", "event")
    organization = models.ForeignKey(
        Organization,
        on_delete=models.DO_NOTHING,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    term_hash = models.BigIntegerField()
    occurred_at = models.DateTimeField()  # of the row's newest event
    event = models.ForeignKey(  # the row's newest event
        Event, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    oldest_at = models.DateTimeField(null=True)  # of the row's oldest; NULL: one event
    event_ids = EventIds(null=True)  # oldest first; NULL: [event_id]

    def __str__(self) -> str:
        return f"{self.term_hash:x}"


class EventHourlyCount(models.Model):
    """Events per organization, hour and action, kept up to date at write time so
    the activity chart never scans the events of a long range."""

    pk = models.CompositePrimaryKey("organization", "hour", "action")
    organization = models.ForeignKey(
        Organization, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    hour = models.DateTimeField()
    action = models.ForeignKey(
        Activity, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    count = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            # The chart of an Activity filter reads one activity's hours in order; with
            # count in the index SQLite answers it from the index alone.
            models.Index(
                fields=["organization", "action", "hour", "count"], name="hourly_org_action_hour"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h: {self.count}"


class EventHourlyTotal(models.Model):
    """Events per organization and hour, all activities together: the unfiltered
    chart reads 24 rows a day of its range, whatever the number of activities."""

    pk = models.CompositePrimaryKey("organization", "hour")
    organization = models.ForeignKey(
        Organization, on_delete=models.DO_NOTHING, related_name="+", db_index=False
    )
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H}h: {self.count}"


class IngestedEvent(models.Model):
    """The idempotency key of an ingested event: a product's own id for it, unique per
    product, and the event it was recorded as. Inserted (ON CONFLICT DO NOTHING) in the
    transaction that records the event, so a resent or concurrently sent event is
    recorded once. `event_id` is no foreign key: the retention job removes events. It
    also removes the keys claimed longer ago than any plan keeps events (`claimed_at`,
    filled by the database: audit.retention.ingest_claims_purge)."""

    # The unique constraint's index serves the foreign key too.
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="+", db_index=False)
    external_id = models.CharField(max_length=200)
    event_id = models.BigIntegerField(null=True)
    claimed_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "external_id"], name="ingestedevent_product_external"
            )
        ]

    def __str__(self) -> str:
        return f"{self.product_id}:{self.external_id} -> {self.event_id}"


class Stream(models.Model):
    """A destination the organization's events are POSTed to as they are recorded
    (README, "Streaming"). `cursor_txid`, `cursor_id` is its durable position in the
    events stream's (txid, id) recording order (audit.selectors.event_stream_slice):
    everything at or before it was delivered (2xx) or filtered out. Only the worker
    holding the lease (`lease_owner` until `lease_until`) delivers it."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="streams")
    name = models.CharField(max_length=100)
    url = models.URLField("destination URL", max_length=500)
    # Write-only: sent as the Authorization header, never shown (pages, admin) again.
    authorization = models.CharField(max_length=1000, blank=True)
    categories = models.JSONField(default=list, blank=True)  # activity category keys
    product_kinds = models.JSONField(default=list, blank=True)  # Product.Kind values
    enabled = models.BooleanField(default=True)
    paused_reason = models.CharField(max_length=300, blank=True)
    secret = models.CharField(max_length=80)
    previous_secret = models.CharField(max_length=80, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    cursor_txid = models.BigIntegerField(default=0)
    cursor_id = models.BigIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)  # consecutive
    first_failure_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["organization", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def health(self) -> str:
        if not self.enabled:
            return "paused"
        return "retrying" if self.failures else "healthy"


class StreamAttempt(models.Model):
    """One POST to a stream's destination (the last 100 are kept per stream)."""

    stream = models.ForeignKey(
        Stream, on_delete=models.CASCADE, related_name="attempts", db_index=False
    )
    started_at = models.DateTimeField()
    batch_id = models.CharField(max_length=40)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    batch_size = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    first_event_id = models.BigIntegerField(null=True, blank=True)
    last_event_id = models.BigIntegerField(null=True, blank=True)
    is_test = models.BooleanField(default=False)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["stream", "id"], name="streamattempt_stream_id")]

    def __str__(self) -> str:
        return f"{self.stream_id} {self.started_at:%Y-%m-%d %H:%M:%S} {self.outcome}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def outcome(self) -> str:
        return str(self.status_code) if self.status_code is not None else self.error


class Block(models.Model):
    """A sealed run of an organization's events, in recording order (the events stream's
    (txid, id) order): the Merkle root of their leaves, chained to the block before and
    signed (audit.integrity, audit.verify). Append-only, and the retention job keeps it:
    `leaves` (occurred_at and hash of each event) lets the chain verify after events are
    removed."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    sequence = models.PositiveBigIntegerField()
    # Positions (txid, id) of the first and last event; txid is null on SQLite.
    first_txid = models.BigIntegerField(null=True)
    first_event_id = models.BigIntegerField()
    last_txid = models.BigIntegerField(null=True)
    last_event_id = models.BigIntegerField()
    event_count = models.PositiveIntegerField()
    total_events = models.PositiveBigIntegerField()
    merkle_root = models.CharField(max_length=64)
    previous_hash = models.CharField(max_length=64)
    block_hash = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=100)
    sealed_at = models.DateTimeField()
    leaves = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "sequence"], name="block_org_sequence")
        ]

    def __str__(self) -> str:
        return f"Block {self.sequence} of {self.organization_id}"


class RetentionMark(models.Model):
    """One retention run's removal in one organization: verification reads "events
    before `cutoff` removed by retention on `purged_at`" rather than a failure for
    sealed events older than the cutoff. Append-only."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    cutoff = models.DateTimeField()
    purged_at = models.DateTimeField()
    events = models.PositiveBigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["organization", "cutoff"], name="retentionmark_org")]

    def __str__(self) -> str:
        return f"{self.events} before {self.cutoff:%Y-%m-%d} removed {self.purged_at:%Y-%m-%d}"


class IntegrityCheck(models.Model):
    """The outcome of one verification of an organization's log (the daily job or
    `manage.py audit_verify`): what the Integrity panel shows."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    checked_at = models.DateTimeField()
    ok = models.BooleanField()
    blocks = models.PositiveBigIntegerField(default=0)
    events = models.PositiveBigIntegerField(default=0)
    sealed_until = models.DateTimeField(null=True)
    problem = models.TextField(blank=True)
    retention_note = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["organization", "-checked_at"], name="check_org_time")]

    def __str__(self) -> str:
        return f"{'OK' if self.ok else 'FAILED'} {self.checked_at:%Y-%m-%d %H:%M}"
