from datetime import timedelta
from zoneinfo import available_timezones

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

TIME_ZONE_CHOICES = [(tz, tz) for tz in sorted(available_timezones())]


EMAIL_TAKEN = "An account with this email already exists"


def email_normalize(email: str) -> str:
    """The one form an email is stored and looked up in: stripped, lower-case. Mail
    servers treat the local part as case-sensitive in theory; no provider does, and
    two accounts for Admin@ and admin@ would be the same person's."""
    return (email or "").strip().lower()


class UserManager(BaseUserManager):
    use_in_migrations = True

    def get_by_natural_key(self, username: str):
        # Signing in (AccountBackend), createsuperuser and the admin find an account in
        # any case. LOWER(email) = ... rather than iexact: it is the unique index below.
        return self.alias(email_lower=Lower("email")).get(email_lower=email_normalize(username))

    def _create_user(self, email: str, password: str | None, **extra):
        if not email_normalize(email):
            raise ValueError("An email address is required")
        user = self.model(email=email_normalize(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self._create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """An account: signs in with its email. Org admins and the accounts their
    products serve are the same kind of row; Membership says who is what where."""

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=150, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC", choices=TIME_ZONE_CHOICES)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(
                Lower("email"), name="user_email_ci_unique", violation_error_message=EMAIL_TAKEN
            )
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = email_normalize(self.email)

    @property
    def display_name(self) -> str:
        return self.name or self.email

    @property
    def email_domain(self) -> str:
        return self.email.rpartition("@")[2].lower()


# The longest retention a plan may have: a century. More is a typo, and past ~700,000
# days the retention job's cutoff (now minus the retention) falls before year 1.
MAX_RETENTION_DAYS = 36_500


class Plan(models.Model):
    """A subscription plan and what it includes. Rows are created by a data
    migration from the vendor's entitlement table; staff may edit them."""

    key = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=80)
    audit_log = models.BooleanField(
        "audit log available",
        default=False,
        help_text="Without it the organization audit log page explains the upgrade.",
    )
    admin_activity = models.BooleanField(
        default=False,
        help_text="Site & product users, groups, organization, security policies, "
        "user accounts and the audit log's own settings.",
    )
    user_created_activity = models.BooleanField(default=False)
    user_created_product_kinds = models.CharField(
        max_length=200,
        blank=True,
        help_text="Comma-separated product kinds whose user-created activity is recorded "
        "(e.g. 'jira,confluence'); blank means every product.",
    )
    classification_activity = models.BooleanField(default=False)
    api_token_activity = models.BooleanField("API token usage", default=False)
    export_activity = models.BooleanField(
        default=False, help_text="Exports of Confluence pages and spaces."
    )
    content_setting = models.BooleanField(
        "stored / not-stored setting",
        default=False,
        help_text="Admins may choose whether user-created content is stored.",
    )
    streaming = models.BooleanField(default=False)
    max_webhooks = models.PositiveSmallIntegerField(
        "streams",
        default=0,
        validators=[MaxValueValidator(3)],
        help_text="Streaming destinations the organization may have (0 to 3); "
        "used only when streaming is on.",
    )
    retention_days = models.PositiveIntegerField(default=180)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    @property
    def retention(self) -> timedelta:
        """How far back the plan shows events: retention_days, never more than
        MAX_RETENTION_DAYS (a row edited around the admin's check), past which "now
        less the retention" falls before year 1."""
        return timedelta(days=min(self.retention_days, MAX_RETENTION_DAYS))

    @property
    def user_created_kinds(self) -> list[str]:
        """The product kinds of user_created_product_kinds, in order; empty: every one."""
        return [k.strip() for k in self.user_created_product_kinds.split(",") if k.strip()]

    def covers_product(self, product_kind: str) -> bool:
        kinds = self.user_created_kinds
        return not kinds or product_kind in kinds


class Organization(models.Model):
    name = models.CharField(max_length=120)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="organizations")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Organization admin"
        MEMBER = "member", "Member"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="membership_unique")
        ]
        indexes = [models.Index(fields=["user", "role"], name="membership_user_role")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"


class VerifiedDomain(models.Model):
    """Accounts whose email is on a verified domain are managed by the org."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="domains")
    domain = models.CharField(max_length=253, unique=True)
    verified_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain

    def save(self, *args, **kwargs):
        self.domain = self.domain.strip().lower()
        super().save(*args, **kwargs)


class Site(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="sites")
    name = models.CharField(max_length=253, unique=True, help_text="e.g. acme.example.net")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    class Kind(models.TextChoices):
        JIRA = "jira", "Jira"
        CONFLUENCE = "confluence", "Confluence"
        BITBUCKET = "bitbucket", "Bitbucket"
        JSM = "jira-service-management", "Jira Service Management"
        TRELLO = "trello", "Trello"
        LOOM = "loom", "Loom"

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="products")
    kind = models.CharField(max_length=40, choices=Kind.choices)

    class Meta:
        ordering = ["site__name", "kind"]
        constraints = [models.UniqueConstraint(fields=["site", "kind"], name="product_unique")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.site.name}"

    @property
    def name(self) -> str:
        return self.get_kind_display()


class Group(models.Model):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="groups")
    name = models.CharField(max_length=120)
    description = models.CharField(max_length=300, blank=True)
    members = models.ManyToManyField(User, blank=True, related_name="user_groups")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="group_unique")
        ]

    def __str__(self) -> str:
        return self.name


class PasswordResetRequest(models.Model):
    """A password reset request that was let through, counted by the throttle (per
    email, per address) across every web worker. Rows older than the window go."""

    email = models.CharField(max_length=254)
    ip = models.GenericIPAddressField(null=True, blank=True)
    requested_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["email", "requested_at"], name="pwreset_email_time"),
            models.Index(fields=["ip", "requested_at"], name="pwreset_ip_time"),
            models.Index(fields=["requested_at"], name="pwreset_time"),
        ]

    def __str__(self) -> str:
        return f"{self.email} from {self.ip} at {self.requested_at:%Y-%m-%d %H:%M}"


class HashedKey(models.Model):
    """What API keys and ingest keys share: `<scheme>_<prefix>_<secret part>`, the prefix
    visible (it tells keys apart on pages and in the log), the whole key stored only as
    its SHA-256 hash, so it is shown once, when created, and never again."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, unique=True)
    secret_hash = models.CharField("SHA-256 of the key", max_length=64)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """How the log and the pages name the key: never the secret."""
        return f"{self.name} ({self.prefix})"


class ApiKey(HashedKey):
    """An organization's key to the REST API: `alk_<prefix>_<secret part>`."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    # Who created it, copied: the command line has no account, and accounts go.
    creator_name = models.CharField(max_length=150, blank=True)
    expires_at = models.DateTimeField()
    # Set by the hourly job when it records the key's expiry, so it records it once.
    expiry_recorded_at = models.DateTimeField(null=True, blank=True)

    class Meta(HashedKey.Meta):
        verbose_name = "API key"
        indexes = [
            models.Index(fields=["organization", "created_at"], name="apikey_org_created"),
            models.Index(
                fields=["expires_at"],
                name="apikey_expiry_unrecorded",
                condition=models.Q(expiry_recorded_at__isnull=True, revoked_at__isnull=True),
            ),
        ]

    def status_at(self, now) -> str:
        if self.revoked_at is not None:
            return self.Status.REVOKED
        if self.expires_at <= now:
            return self.Status.EXPIRED
        return self.Status.ACTIVE

    @property
    def status(self) -> str:
        return self.status_at(timezone.now())

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class IngestKey(HashedKey):
    """A product's credential for sending its events to the ingest endpoint:
    `ilk_<prefix>_<secret part>`. Another scheme word than API keys', so neither kind
    authenticates as the other. Staff create and revoke them (Django admin, or
    `manage.py create_ingest_key`); they do not expire."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="ingest_keys")

    class Meta(HashedKey.Meta):
        verbose_name = "ingest key"
        indexes = [models.Index(fields=["product", "created_at"], name="ingestkey_product_created")]

    @property
    def status(self) -> str:
        return "revoked" if self.revoked_at is not None else "active"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ApiKeyUse(models.Model):
    """That a key was used from an address in an hour: one row each, inserted only if
    absent (INSERT ... ON CONFLICT DO NOTHING), so `api_token_used` is recorded once per
    key, address and hour whatever the number of requests or processes. Rows older
    than two hours are removed by the hourly job."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="uses")
    ip = models.CharField(max_length=45, blank=True)  # "" when unknown: NULLs never conflict
    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["api_key", "ip", "hour"], name="apikeyuse_unique")
        ]
        indexes = [models.Index(fields=["hour"], name="apikeyuse_hour")]

    def __str__(self) -> str:
        return f"{self.api_key_id} from {self.ip or '?'} at {self.hour:%Y-%m-%d %H:00}"


class RateLimitCounter(models.Model):
    """One fixed window of orgs.ratelimit's counter for one key, when counting in the
    database: incremented by an atomic upsert; expired windows are removed."""

    key = models.CharField(max_length=200)
    window_start = models.BigIntegerField()  # epoch seconds
    reset_at = models.BigIntegerField()  # epoch seconds: the window's end
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["key", "window_start"], name="ratelimit_unique")
        ]
        indexes = [models.Index(fields=["reset_at"], name="ratelimit_reset")]

    def __str__(self) -> str:
        return f"{self.key} @ {self.window_start}: {self.count}"
