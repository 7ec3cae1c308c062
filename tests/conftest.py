"""The cast every test can use: an org on Guard Premium with its admin, a member,
an outsider and another org; staff; sites and products."""

import email
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from email.policy import default as default_policy
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.db import connection, connections, transaction
from django.urls import reverse
from django.utils import timezone

from audit.guard import purge_allowed
from audit.integrity import public_keys, seal_org
from audit.models import Block, Event
from audit.services import event_record, item
from orgs.models import Membership, Organization, Plan, Product, Site, User


def plan(key: str) -> Plan:
    return Plan.objects.get(key=key)


@pytest.fixture
def org(db) -> Organization:
    return Organization.objects.create(name="Acme", plan=plan("guard-premium"))


@pytest.fixture
def other_org(db) -> Organization:
    return Organization.objects.create(name="Globex", plan=plan("guard-premium"))


@pytest.fixture
def site(org) -> Site:
    return Site.objects.create(organization=org, name="acme.example.net")


@pytest.fixture
def jira(site) -> Product:
    return Product.objects.create(site=site, kind=Product.Kind.JIRA)


@pytest.fixture
def confluence(site) -> Product:
    return Product.objects.create(site=site, kind=Product.Kind.CONFLUENCE)


@pytest.fixture
def bitbucket(site) -> Product:
    return Product.objects.create(site=site, kind=Product.Kind.BITBUCKET)


def make_user(email: str, org: Organization | None = None, role: str = "member", **extra) -> User:
    user = User.objects.create_user(email, "pw-for-tests", name=extra.pop("name", ""), **extra)
    if org is not None:
        Membership.objects.create(user=user, organization=org, role=role)
    return user


@pytest.fixture
def admin(org) -> User:
    return make_user("alice@acme.test", org, Membership.Role.ADMIN, name="Alice Admin")


@pytest.fixture
def member(org) -> User:
    return make_user("bob@acme.test", org, Membership.Role.MEMBER, name="Bob Member")


@pytest.fixture
def outsider(other_org) -> User:
    return make_user("olga@globex.test", other_org, Membership.Role.ADMIN, name="Olga Outsider")


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_superuser("staff@acme.test", "pw-for-tests", name="Sam Staff")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup):
    """Keep serialized_rollback working once Playwright has started: its sync API runs
    tests in a greenlet where django.db.connections hands out new connection objects,
    without the serialized contents that a serialized_rollback test restores the
    migrations' data (plans, the catalogue, schedules) from. On the class, every
    connection object has them."""
    from django.db import connections

    connection = connections["default"]
    contents = getattr(connection, "_test_serialized_contents", None)
    if contents is not None:
        type(connection)._test_serialized_contents = contents
    # Restoring that data saves the catalogue's rows again over the ones migrations
    # made: the catalogue's append-only guard (audit/guard.py) must let it, as it lets
    # flush (audit/management/commands/flush.py).
    creation = type(connection.creation)
    original = creation.deserialize_db_from_string

    def deserialize_db_from_string(self, data):
        with transaction.atomic(using=self.connection.alias), purge_allowed(self.connection):
            original(self, data)

    creation.deserialize_db_from_string = deserialize_db_from_string
    yield
    creation.deserialize_db_from_string = original


def in_threads(fn, count: int = 1) -> list:
    """Runs `fn` in `count` threads released at the same moment, each on database
    connections of its own (closed after); returns what each call returned."""
    barrier, results = threading.Barrier(count), []

    def run():
        try:
            barrier.wait(5)
            results.append(fn())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == count, "a thread failed: see its traceback above"
    return results


def record(
    org: Organization,
    action: str = "group_created",
    *,
    ago: timedelta = timedelta(hours=1),
    now: datetime | None = None,
    **fields,
) -> Event:
    """One event of `org`, through the recording service, `ago` before `now` (default:
    the clock); in the group "engineering" unless `context` is given."""
    fields.setdefault("context", [item("group", 1, "engineering")])
    when = (now or timezone.now()) - ago
    return event_record(organization=org, action=action, occurred_at=when, **fields).event


def url(name: str, org: Organization, *args, **params) -> str:
    """The URL of an organization's page `name`, with `params` as its query string
    (lists repeat their parameter)."""
    base = reverse(name, args=[org.pk, *args])
    return f"{base}?{urlencode(params, doseq=True)}" if params else base


# Real parts: an SMTP server (aiosmtpd) and the test database's URL for subprocesses.


class Inbox:
    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=default_policy))
        return "250 Message accepted for delivery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the test database this process uses, for the worker to open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        if db["NAME"] == ":memory:" or "mode=memory" in str(db["NAME"]):
            pytest.skip("the SQLite test database is in memory: a worker cannot share it")
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def smtp_inbox():
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield inbox, controller.port
    controller.stop()


def event_matches(event: Event, params: dict) -> bool:
    """What each filter of the page and the API means, written out over one event's
    columns: the oracle the filter tests check the selectors against."""
    actions = params.get("action", [])
    if actions and event.action.key not in actions:
        return False
    actors = params.get("actor", [])
    if actors and not (
        event.actor_id in actors or event.actor_email.lower() in {a.lower() for a in actors}
    ):
        return False
    if params.get("ip") and event.ip not in {str(ip_address(a)) for a in params["ip"]}:
        return False
    products = params.get("product", [])
    if products and not (str(event.product_id) in products or event.product_kind in products):
        return False
    if "location" in params:
        columns = {"city": "city", "countryName": "country", "regionName": "region"}
        places = json.loads(params["location"])
        if not any(all(getattr(event, columns[k]) == v for k, v in p.items()) for p in places):
            return False
    if "q" in params:
        names = {str(one.get("name", "")).lower() for one in event.context}
        if params["q"].strip().lower() not in names | {event.actor_email.lower()}:
            return False
    return True


ROOT = Path(__file__).resolve().parents[1]


def verify_offline(*args: str, tmp_path: Path, keys=None) -> subprocess.CompletedProcess:
    """python -m audit.verify in a process that cannot import Django: only audit/ (the
    empty package and verify.py) on its path, beside a `django` that refuses to load."""
    pkg = tmp_path / "standalone"
    (pkg / "audit").mkdir(parents=True, exist_ok=True)
    (pkg / "audit" / "__init__.py").write_text((ROOT / "audit" / "__init__.py").read_text())
    (pkg / "audit" / "verify.py").write_text((ROOT / "audit" / "verify.py").read_text())
    (pkg / "django").mkdir(exist_ok=True)
    (pkg / "django" / "__init__.py").write_text("raise ImportError('no Django here')\n")
    key_file = tmp_path / "keys.json"
    if keys is None:
        keys = public_keys()
    key_file.write_text(json.dumps({"keys": keys}))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(pkg)}
    return subprocess.run(
        [sys.executable, "-m", "audit.verify", "--key", str(key_file), *args],
        cwd=pkg,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def seal(org, block_events: int | None = None) -> int:
    """seal_org until every event of `org` is sealed: on PostgreSQL a transaction
    still open anywhere on the server (another test suite's) holds the horizon back
    for a moment."""
    sealed_now, deadline = 0, time.monotonic() + 60
    while True:
        sealed_now += seal_org(org.pk, block_events=block_events)
        last = Block.objects.filter(organization=org).order_by("-sequence").first()
        total = last.total_events if last else 0
        if total >= Event.objects.filter(organization=org).count():
            return sealed_now
        assert time.monotonic() < deadline, "sealing did not catch up"
        time.sleep(0.05)


class GuardEditor:
    """What audit.guard.append_only_install needs of a schema editor: for tests that
    drop a trigger (as a database owner could) and put the guard back after."""

    connection = connection

    @staticmethod
    def execute(sql, params=None):
        with connection.cursor() as cursor:
            cursor.execute(sql)


# A real worker: `manage.py qcluster` on the test database.


@contextmanager
def qcluster_running(tmp_path: Path, **env_extra: str) -> Iterator[tuple[subprocess.Popen, object]]:
    """A real `manage.py qcluster` against the test database, with `env_extra` over the
    environment; yields (process, its log file). Stopped by SIGTERM to its main PID
    only: signalling its whole process group hangs qcluster."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "Q_SYNC": "false",
        "LOG_LEVEL": "WARNING",
        # Stopping waits for the long-running loops (sealing, streams) to end their turn.
        "AUDIT_SEAL_LOOP_SECONDS": "3",
        "STREAM_LOOP_SECONDS": "5",
        **env_extra,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    log = open(tmp_path / "qcluster.log", "w+b")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield worker, log
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        # Whatever is left of its group (it leads its own session): a worker process
        # outliving the test would go on sealing or delivering in the next one's data.
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        worker.wait()
        log.close()


def redis_broker(monkeypatch, url: str) -> dict:
    """Redis at `url` as the django-q2 broker of this process's enqueues, its queue (a
    list named after the cluster) emptied; returns the worker's environment for it
    (Q_REDIS_URL). Skips without a Redis server, fails in CI (REQUIRE_REDIS)."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    redis = pytest.importorskip("redis", reason="the redis extra is not installed")
    try:
        connection = redis.Redis.from_url(url, socket_connect_timeout=1)
        connection.delete(Conf.CLUSTER_NAME)
    except redis.RedisError:
        if os.getenv("REQUIRE_REDIS"):  # CI (.ci/run): a missing server is a failure
            raise
        pytest.skip(f"no Redis server at {url}")
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", url)
    # This process's tasks go to Redis only: a worker not reading it never sees them.
    assert type(get_broker()).__name__ == "Redis"
    return {"Q_REDIS_URL": url}


def worker_wait_for(predicate, worker, log, *, what: str, timeout: float) -> None:
    """Waits until `predicate()` is true; fails with the worker's log if `timeout`
    seconds pass or the worker exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker.poll() is not None:
            break
        time.sleep(0.1)
    log.seek(0)
    pytest.fail(f"the worker did not {what}:\n" + log.read().decode()[-3000:])


def term_hashes(event: int | Event) -> set[int]:
    """The search terms (their hashes) stored for one event (or its id): those of the
    term rows (audit.models.EventTerm) that hold it."""
    event_id = event.pk if isinstance(event, Event) else event
    if connection.vendor == "postgresql":
        sql = (
            "SELECT term_hash FROM audit_eventterm "
            "WHERE %s = ANY(coalesce(event_ids, ARRAY[event_id]))"
        )
    else:
        sql = (
            "SELECT t.term_hash FROM audit_eventterm t, "
            "json_each(coalesce(t.event_ids, json_array(t.event_id))) u WHERE u.value = %s"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, [event_id])
        return {row[0] for row in cursor.fetchall()}


def term_events(rows) -> list[int]:
    """The event ids the term rows `rows` (an EventTerm queryset) hold, each once per row
    that holds it: len() is how many (term, event) pairs they store."""
    held = rows.values_list("event_id", "event_ids")
    return [pk for newest, ids in held for pk in (ids if ids is not None else [newest])]
