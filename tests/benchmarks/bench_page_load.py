"""Audit log page under load: gunicorn with 2 sync workers (as `make run` serves it,
DEBUG off as in production), wrk with 32 connections on the page of a signed-in admin,
a million events in the organization (SQLite by default).

    .venv/bin/python tests/benchmarks/bench_page_load.py               # seeds if needed
    .venv/bin/python tests/benchmarks/bench_page_load.py --duration 60 --connections 32
    .venv/bin/python tests/benchmarks/bench_page_load.py --query 'range=90d'

The database is bench_audit_page.py's (the same --database-url default): it is seeded the
same way (1M events in Acme Corporation, 1M in 50 other organizations) unless it already
holds Acme Corporation, so the two benchmarks share one seeding. Needs `wrk`
(apt-get install -y wrk).

Prints requests/s, wrk's latency p50/p90/p99, errors (socket errors and non-2xx/3xx
answers; every answer is also checked to be the page itself, not a redirect to sign-in,
before the run), and the server's CPU time per request: the CPU time gunicorn's
processes (arbiter and workers) used during the run, divided by the requests answered.
That figure does not depend on how busy the machine is (requests/s does: this machine is
shared), so both are printed with the load average.

Target (issue 16): <= 8 ms of server CPU per page, so >= 250 requests/s at 32
connections with 2 workers on 2 cores.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audit_page import DEFAULT_URL  # noqa: E402
from bench_audit_page import seed as page_seed  # noqa: E402
from bench_record import django_setup, run_header  # noqa: E402

# The server and this script must agree on the key: the session cookie is made here.
SECRET_KEY = "bench-page-load-not-secret-" + "x" * 40
ADMIN = "admin@acme.test"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--events", type=int, default=1_000_000, help="if seeding (1,000,000)")
    parser.add_argument("--other-events", type=int, default=1_000_000, help="if seeding")
    parser.add_argument("--other-orgs", type=int, default=50, help="if seeding (50)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--duration", type=int, default=30, help="seconds of load (30)")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of load first (5)")
    parser.add_argument("--query", default="", help="the page's query string, e.g. range=90d")
    parser.add_argument(
        "--debug", action="store_true", help="DEBUG on, as `make run` in development"
    )
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signed_in_cookie(org) -> str:
    """The Cookie header of a browser signed in as the demo admin who has loaded a page
    (session and CSRF cookies), made through Django's test client."""
    from django.test import Client

    from orgs.models import User

    client = Client()
    client.force_login(User.objects.get(email=ADMIN))
    response = client.get(f"/o/{org.pk}/audit-log/")
    assert response.status_code == 200, response.status_code
    cookies = {name: morsel.value for name, morsel in client.cookies.items() if morsel.value}
    return "; ".join(f"{name}={value}" for name, value in sorted(cookies.items()))


def cpu_seconds(pids: list[int]) -> tuple[float, float]:
    """User and system CPU time of these processes so far (/proc/<pid>/stat), their
    ended children's included (a worker the arbiter replaced)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11]) + int(fields[13])  # utime, cutime
        system += int(fields[12]) + int(fields[14])  # stime, cstime
    return user / ticks, system / ticks


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gunicorn exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit("gunicorn did not answer in time")


def page_check(url: str, cookie: str) -> None:
    """One request as wrk will send it must be the audit log page with its rows."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with opener.open(request, timeout=10) as response:
        body = response.read().decode()
        assert response.status == 200, response.status
    rows = body.count('class="row-link"')
    assert "<h1>Audit log</h1>" in body and rows, "not the audit log page: signed out?"
    print(f"page check: 200, {len(body):,} bytes, {rows} rows")


def wrk(url: str, cookie: str, args, seconds: int) -> str:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s"]
    # A long timeout: wrk leaves a late answer out of its count, and the CPU per request
    # would then be overstated.
    command += ["--timeout", "30s", "--latency", "-H", f"Cookie: {cookie}", url]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    os.environ["SECRET_KEY"] = SECRET_KEY
    django_setup(args.database_url)
    from orgs.models import Organization

    print(run_header(args.database_url), flush=True)
    from django.db import DatabaseError

    try:
        acme = Organization.objects.filter(name="Acme Corporation").first()
    except DatabaseError:  # a new database: no tables yet
        acme = None
    if acme is None:
        page_seed(args)
        acme = Organization.objects.get(name="Acme Corporation")
    from audit.models import Event

    print(f"{Event.objects.filter(organization=acme).count():,} events in {acme.name}")
    cookie = signed_in_cookie(acme)

    port = free_port()
    static_root = tempfile.mkdtemp(prefix="bench-page-static-")
    env = os.environ | {
        "DATABASE_URL": args.database_url,
        "DEBUG": "true" if args.debug else "false",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "STATIC_ROOT": static_root,
        "LOG_LEVEL": "WARNING",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    python = str(Path(sys.executable))
    subprocess.run(
        [python, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    # As audit/management/commands/serve.py starts it (its access log to nowhere here).
    command = [gunicorn, "auditlog_site.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(args.workers), "--access-logfile", "-"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/accounts/login/", server)
        url = f"{base}/o/{acme.pk}/audit-log/" + (f"?{args.query}" if args.query else "")
        page_check(url, cookie)
        if args.warmup:
            wrk(url, cookie, args, args.warmup)
        pids = [server.pid, *children(server.pid)]
        load_before = os.getloadavg()
        cpu_before, started = cpu_seconds(pids), time.monotonic()
        out = wrk(url, cookie, args, args.duration)
        cpu_after, wall = cpu_seconds(pids), time.monotonic() - started
        load_after = os.getloadavg()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(static_root, ignore_errors=True)

    user, system = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
    cpu = user + system
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print(out.rstrip())
    print(
        f"\n{'DEBUG on' if args.debug else 'DEBUG off'}, {args.workers} gunicorn sync workers, "
        f"{args.connections} connections, {args.duration} s, "
        f"page {url.split(str(port), 1)[1]}"
    )
    print(f"requests/s       {rate:8.1f}   ({requests:,} requests)")
    print(
        f"latency          p50 {ms(latency['50']):.1f} ms, p90 {ms(latency['90']):.1f} ms, "
        f"p99 {ms(latency['99']):.1f} ms"
    )
    print(
        f"errors           {errors.group(1) if errors else 'no socket errors'}; "
        f"{non_2xx.group(1) if non_2xx else 0} non-2xx/3xx"
    )
    per = 1000 / max(requests, 1)
    print(
        f"server CPU       {cpu * per:.2f} ms per request: {user * per:.2f} ms user (Python), "
        f"{system * per:.2f} ms system (sockets, a TCP connection per request: sync "
        f"workers do not keep connections alive) ({cpu:.1f} s CPU in {wall:.1f} s; "
        f"{cpu / wall:.2f} cores busy)"
    )
    print(
        "load average     before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in load_after)
        + f" ({os.cpu_count()} cores, shared machine)"
    )


if __name__ == "__main__":
    main()
