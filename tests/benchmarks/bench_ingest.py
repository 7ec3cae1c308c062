"""Ingest benchmark: POST /ingest/v1/events over real HTTP to gunicorn (2 workers, as
`make run` serves), batches of 1,000 events from 4 concurrent clients.

    .venv/bin/python tests/benchmarks/bench_ingest.py                  # SQLite
    .venv/bin/python tests/benchmarks/bench_ingest.py --database-url \\
        postgres://auditlog@127.0.0.1:5432/bench_ingest                  # PostgreSQL
    .venv/bin/python tests/benchmarks/bench_ingest.py --events 20000   # small

Seeds Acme Corporation with its demo activity (--base-events, 100,000), gives each of
its products an ingest key, builds the events first (the demo simulator's: issues and
pages viewed and edited, group changes, each with a unique id; JSON-encoded before the
clock starts), then times 4 clients, each on its own kept-alive connection and key in
turn, sending its share of the batches as fast as answers come back. Prints:

  events/s            events recorded / wall time from the first request to the last answer
  request p50 / p95   per 1,000-event request
  visible after 2xx   for every 10th batch: from its 2xx to its last event answering 200
                      on the API (GET .../events/{id}) and on the audit log page (the
                      event's detail page, signed in as the org admin)

Targets (ingest issue): >= 10,000 events/s, p95 <= 500 ms, visible < 1 s; SQLite and
PostgreSQL. The ingest and API rate limits are lifted for the run.
"""

import argparse
import http.client
import json
import os
import random
import resource
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import free_port, gunicorn_start  # noqa: E402
from bench_audit_page import seed  # noqa: E402
from bench_record import django_setup, run_header  # noqa: E402

DEFAULT_URL = "sqlite:////tmp/bench_ingest.sqlite3"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--events", type=int, default=200_000, help="events to send (200,000)")
    parser.add_argument("--batch", type=int, default=1000, help="events per request (1,000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument(
        "--base-events", type=int, default=100_000, help="Acme's events before (100,000)"
    )
    args = parser.parse_args()
    args.other_events, args.other_orgs = 0, 0  # what bench_audit_page's seed reads
    return args


def batches_make(products, count: int, size: int) -> list[tuple[int, bytes]]:
    """(product index, JSON body) for `count` events in batches of `size`."""
    from audit.simulator import simulated_batch, simulated_products

    simulated = simulated_products({p.pk: "" for p in products})
    rng = random.Random(1)
    bodies = []
    for n in range(0, count, size):
        index = (n // size) % len(simulated)
        events = simulated_batch(simulated[index], rng, min(size, count - n))
        bodies.append((index, json.dumps({"events": events}).encode()))
    return bodies


def signed_in_cookie(user) -> str:
    """A session cookie for `user`, as signing in would make."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[-1]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


class Client(threading.Thread):
    def __init__(self, port, secrets, bodies, check):
        super().__init__()
        self.port, self.secrets, self.bodies, self.check = port, secrets, bodies, check
        self.timings, self.visible, self.recorded, self.failures = [], [], 0, []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        for number, (index, body) in enumerate(self.bodies):
            headers = {
                "Authorization": f"Bearer {self.secrets[index]}",
                "Content-Type": "application/json",
                "Host": "127.0.0.1",
            }
            started = time.perf_counter()
            conn.request("POST", "/ingest/v1/events", body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            answered = time.perf_counter()
            self.timings.append(answered - started)
            if response.status != 200:
                self.failures.append((response.status, answer[:300]))
                continue
            results = json.loads(answer)["results"]
            self.recorded += sum(r["status"] == "recorded" for r in results)
            if number % 10 == 0:
                last = next(r["eventId"] for r in reversed(results) if r.get("eventId"))
                self.visible.append(self.check(last) - answered)


def cpu_seconds(command_prefix: str) -> float:
    """CPU time (user + system) so far of this machine's processes whose name starts
    with `command_prefix` (e.g. "postgres"), their ended children's included: the
    database server's share of the run, with the backends that closed meanwhile (a
    connection older than DB_CONN_MAX_AGE is closed and opened again), which the
    postmaster's children's time holds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)
        except OSError:
            continue
        if fields[0].split("(", 1)[1].startswith(command_prefix):
            parts = fields[1].split()
            total += sum(map(int, parts[11:15]))  # utime, stime, cutime, cstime
    return total / tick


def visibility_check(port: int, org_id: int, api_secret: str, cookie: str):
    """A function: polls the API and the event's page until both answer 200 for an event
    id; the time when they did."""

    def check(event_id: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        requests = [
            (
                f"/admin/v1/orgs/{org_id}/events/{event_id}",
                {"Authorization": f"Bearer {api_secret}"},
            ),
            (f"/o/{org_id}/audit-log/events/{event_id}/", {"Cookie": cookie}),
        ]
        for path, headers in requests:
            while True:
                conn.request("GET", path, headers={**headers, "Host": "127.0.0.1"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    break
                if response.status != 404:
                    raise SystemExit(f"{path}: {response.status}")
                time.sleep(0.01)
        conn.close()
        return time.perf_counter()

    return check


def main() -> None:
    args = parse_args()
    # As gunicorn runs (bench_api): its secret signs the session cookie, DEBUG off makes
    # collectstatic write the manifest the page reads.
    os.environ.update(SECRET_KEY="bench-only", DEBUG="false", SECURE_SSL_REDIRECT="false")
    django_setup(args.database_url)
    print(run_header(args.database_url), flush=True)
    seed(argparse.Namespace(**{**vars(args), "events": args.base_events}))
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)  # the page, with DEBUG off
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    from audit.demo import ADMIN_EMAIL
    from audit.models import Event
    from orgs.models import Organization, Product, User
    from orgs.services import api_key_create, ingest_key_create

    acme = Organization.objects.select_related("plan").get(name="Acme Corporation")
    products = list(Product.objects.filter(site__organization=acme).order_by("pk"))
    secrets = [ingest_key_create(product=p, name="bench", by=None)[1] for p in products]
    _, api_secret = api_key_create(organization=acme, name="bench", days=1, by=None)
    cookie = signed_in_cookie(User.objects.get(email=ADMIN_EMAIL))
    started = time.perf_counter()
    bodies = batches_make(products, args.events, args.batch)
    print(
        f"built {args.events:,} events in {len(bodies)} bodies of {args.batch} "
        f"({sum(len(b) for _, b in bodies) / len(bodies) / 1024:.0f} KB each) "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    before = Event.objects.filter(organization=acme).count()
    port = free_port()
    server = gunicorn_start(
        args.database_url, port, INGEST_RATE_LIMIT="1000000", API_RATE_LIMIT="1000000"
    )
    try:
        check = visibility_check(port, acme.pk, api_secret, cookie)
        clients = [
            Client(port, secrets, bodies[n :: args.clients], check) for n in range(args.clients)
        ]
        # The database server's CPU: PostgreSQL's processes (SQLite's is the web's own).
        server_name = "postgres" if connection.vendor == "postgresql" else "-"
        own_cpu, db_cpu = time.process_time(), cpu_seconds(server_name)
        started = time.perf_counter()
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        elapsed = time.perf_counter() - started
        own_cpu, db_cpu = time.process_time() - own_cpu, cpu_seconds(server_name) - db_cpu
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    web_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    web_cpu = web_cpu.ru_utime + web_cpu.ru_stime  # gunicorn's master and workers
    failures = [f for c in clients for f in c.failures]
    recorded = sum(c.recorded for c in clients)
    timings = sorted(t for c in clients for t in c.timings)
    visible = sorted(v for c in clients for v in c.visible)
    after = Event.objects.filter(organization=acme).count()
    p95 = timings[max(int(len(timings) * 0.95) - 1, 0)]
    rate = recorded / elapsed
    print(f"{len(timings)} requests, {len(failures)} failed {failures[:2]}")
    print(f"recorded {recorded:,} events ({after - before:,} new rows) in {elapsed:.1f} s")
    print(f"events/s            {rate:10,.0f}   {'ok' if rate >= 10_000 else '<-- below 10,000'}")
    print(
        f"request p50 / p95   {statistics.median(timings) * 1000:7.0f} / {p95 * 1000:.0f} ms"
        f"   {'ok' if p95 <= 0.5 else '<-- over 500 ms'}"
    )
    print(
        f"visible after 2xx   median {statistics.median(visible) * 1000:.0f} ms, "
        f"max {visible[-1] * 1000:.0f} ms over {len(visible)} batches"
        f"   {'ok' if visible[-1] < 1 else '<-- over 1 s'}"
    )
    per = 1000 / max(recorded, 1)
    print(
        f"CPU per 1,000 events: web {web_cpu * per * 1000:.0f} ms, database server "
        f"{db_cpu * per * 1000:.0f} ms, clients (this process) {own_cpu * per * 1000:.0f} ms; "
        f"{(web_cpu + db_cpu + own_cpu) / elapsed:.2f} of {os.cpu_count()} cores busy"
    )
    print(run_header(args.database_url, "(after)"))


if __name__ == "__main__":
    main()
