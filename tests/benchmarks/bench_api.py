"""REST API benchmark: request time over HTTP to gunicorn (2 workers, as `make run`
serves) at a million events in one organization and a million in others.

    .venv/bin/python tests/benchmarks/bench_api.py                   # full scale, SQLite
    .venv/bin/python tests/benchmarks/bench_api.py --database-url \\
        postgres://auditlog@127.0.0.1:5432/bench_api                   # PostgreSQL
    .venv/bin/python tests/benchmarks/bench_api.py --events 50000 \\
        --other-events 50000 --other-orgs 10                 # small, while iterating
    .venv/bin/python tests/benchmarks/bench_api.py --reuse            # skip seeding

Seeds as bench_audit_page.py does (Acme Corporation's demo activity over 180 days, with
needle@acme.test the actor of ~0.1% of its events), creates an API key, starts gunicorn
on a free port and times, from one client with a kept-alive connection:

  events              GET .../events?limit=100 (newest first)
  exact term          q=needle@acme.test
  one action          action=group_member_added
  from/to window      a 7-day window 30 days back, epoch milliseconds
  20th page           the cursor reached by following links.next 19 times
  one event           GET .../events/{id}
  stream, middle      events-stream?limit=200 from a cursor half-way through
  stream, end         events-stream?limit=200 from the cursor of the end (empty poll)

Targets (REST API issue): median <= 30 ms and p95 <= 60 ms for each, SQLite and
PostgreSQL. The rate limit is lifted for the run (API_RATE_LIMIT).
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audit_page import NEEDLE, seed  # noqa: E402
from bench_record import django_setup, run_header  # noqa: E402

DEFAULT_URL = "sqlite:////tmp/bench_api.sqlite3"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--events", type=int, default=1_000_000, help="events in Acme (1,000,000)")
    parser.add_argument(
        "--other-events", type=int, default=1_000_000, help="events in the other orgs (1,000,000)"
    )
    parser.add_argument("--other-orgs", type=int, default=50, help="other organizations (50)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per scenario")
    parser.add_argument("--reuse", action="store_true", help="use the database as it is")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def gunicorn_start(
    database_url: str, port: int, workers: int = 2, **env_extra: str
) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEBUG": "false",
        "SECRET_KEY": "bench-only",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "API_RATE_LIMIT": "1000000",
        "LOG_LEVEL": "WARNING",
        **env_extra,
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "auditlog_site.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("gunicorn did not start")


class Api:
    def __init__(self, port: int, secret: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {secret}", "Host": "127.0.0.1"}

    def get(self, path: str) -> dict:
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status, body[:300])
        return json.loads(body)


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def measure(api: Api, path: str, requests: int) -> tuple[float, float, int]:
    for _ in range(3):
        api.get(path)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        body = api.get(path)
        timings.append(time.perf_counter() - started)
    timings.sort()
    p95 = timings[max(int(len(timings) * 0.95) - 1, 0)]
    return (
        statistics.median(timings),
        p95,
        len(body["data"]) if isinstance(body["data"], list) else 1,
    )


def scenarios(api: Api, org_id: int) -> list[tuple[str, str]]:
    from django.utils import timezone

    base = f"/admin/v1/orgs/{org_id}"
    now = timezone.now()
    window = {
        "from": int((now - timedelta(days=37)).timestamp() * 1000),
        "to": int((now - timedelta(days=30)).timestamp() * 1000),
        "limit": 100,
    }
    page = f"{base}/events?limit=100"
    for _ in range(19):
        page = path_of(api.get(page)["links"]["next"])
    first = api.get(f"{base}/events?limit=1")["data"][0]["id"]
    stream = f"{base}/events-stream?limit=500"
    cursors = []
    while True:  # walk the stream to its end, keeping the cursors on the way
        body = api.get(stream)
        cursors.append(body["meta"]["next"])
        if body["meta"]["page_size"] < 500:
            break
        stream = path_of(body["links"]["next"])
    middle, end = cursors[len(cursors) // 2], cursors[-1]
    return [
        ("events", f"{base}/events?limit=100"),
        ("exact term", f"{base}/events?limit=100&q={NEEDLE}"),
        ("one action", f"{base}/events?limit=100&action=group_member_added"),
        ("from/to window", f"{base}/events?{urlencode(window)}"),
        ("20th page", page),
        ("one event", f"{base}/events/{first}"),
        ("stream, middle", f"{base}/events-stream?limit=200&cursor={middle}"),
        ("stream, end", f"{base}/events-stream?limit=200&cursor={end}"),
    ]


def main() -> None:
    args = parse_args()
    django_setup(args.database_url)
    print(run_header(args.database_url), flush=True)
    if not args.reuse:
        seed(args)
    from django.db import connection

    if connection.vendor == "postgresql":  # as autovacuum would in time; seed_demo does too
        with connection.cursor() as cursor:
            for table in connection.introspection.table_names(cursor):
                cursor.execute(f'ANALYZE "{table}"')
    from orgs.models import Organization
    from orgs.services import api_key_create

    acme = Organization.objects.select_related("plan").get(name="Acme Corporation")
    _, secret = api_key_create(organization=acme, name="bench", days=1, by=None)
    port = free_port()
    server = gunicorn_start(args.database_url, port)
    try:
        api = Api(port, secret)
        started = time.perf_counter()
        cases = scenarios(api, acme.pk)
        print(f"walked the events stream to its end in {time.perf_counter() - started:.1f} s")
        print(f"{'scenario':<18} {'median':>9} {'p95':>9} {'rows':>5}")
        for name, path in cases:
            median, p95, rows = measure(api, path, args.requests)
            flag = "" if median <= 0.030 and p95 <= 0.060 else "  <-- over target"
            print(
                f"{name:<18} {median * 1000:7.1f}ms {p95 * 1000:7.1f}ms {rows:5d}{flag}", flush=True
            )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main()
