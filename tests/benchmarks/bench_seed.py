"""Seed benchmark (issue 16, item 7), on PostgreSQL: `seed_demo --events N --orgs M` into
a fresh, migrated database, end to end (the load, the index builds and the VACUUM
(ANALYZE)), its rate and the extrapolation to the 20M of `--events 10000000 --orgs 1000`.

    .venv/bin/python tests/benchmarks/bench_seed.py                   # 1M Acme + 1M others
    .venv/bin/python tests/benchmarks/bench_seed.py --events 200000   # small, while iterating
    .venv/bin/python tests/benchmarks/bench_seed.py --events 10000000 --orgs 1000 --drop

Target: 20M events in <= 15 minutes on a 2-core machine (>= 22,300 events/s). The
database named by --database-url (bench*) is dropped and made again; `--drop` drops it
at the end. The machine's load average is printed before and after: the rate depends
on what else runs.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import database_reset, django_setup, run_header  # noqa: E402

DEFAULT_URL = "postgres://auditlog@127.0.0.1:5432/bench_seed"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL, help=f"default {DEFAULT_URL}")
    parser.add_argument("--events", type=int, default=1_000_000, help="Acme's events (1M)")
    parser.add_argument("--orgs", type=int, default=100, help="other organizations (100)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="seed processes")
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    return parser.parse_args()


def postgres_cpu() -> float | None:
    """CPU seconds of the local PostgreSQL server so far (Linux /proc): its live
    processes' own, plus the ended ones' (backends, parallel workers) that the
    postmaster has collected. None when no server is visible here."""
    tick = os.sysconf("SC_CLK_TCK")
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state, ppid, ... utime (14th field), stime, cutime, cstime.
        processes[int(entry.name)] = (int(fields[1]), [int(x) for x in fields[11:15]])
    if not processes:
        return None
    total = 0
    for ppid, (utime, stime, cutime, cstime) in processes.values():
        total += utime + stime
        if ppid not in processes:  # the postmaster
            total += cutime + cstime
    return total / tick


def main() -> None:
    args = parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("PostgreSQL only")
    os.environ["AUDIT_SIGNING_KEY"] = ""
    os.environ["AUDIT_SIGNING_KEY_FILE"] = ""
    database_reset(args.database_url)
    django_setup(args.database_url)
    from django.core.management import call_command
    from django.db import connections

    from audit.models import Event

    call_command("migrate", verbosity=0)
    print(run_header(args.database_url), flush=True)
    keys = Path(tempfile.mkdtemp(prefix="bench_seed_")) / "keys.json"
    started = time.perf_counter()
    cpu, server = os.times(), postgres_cpu()
    call_command(
        "seed_demo", events=args.events, orgs=args.orgs, jobs=args.jobs, simulator_keys=keys
    )
    seconds = time.perf_counter() - started
    spent = os.times()
    total = Event.objects.count()
    own = (spent.user - cpu.user) + (spent.system - cpu.system)
    children = (spent.children_user - cpu.children_user) + (
        spent.children_system - cpu.children_system
    )
    server = postgres_cpu() - server if server is not None else None
    cpu_text = f"CPU per event: Python {(own + children) / total * 1e6:.0f} us"
    if server is not None:
        cpu_text += f", PostgreSQL {server / total * 1e6:.0f} us (the whole server's)"
    print(
        f"seed: {total:,} events in {seconds:.1f} s ({total / seconds:,.0f} events/s, "
        f"{args.jobs} jobs; {cpu_text}): "
        f"20M would take ~{20e6 / (total / seconds) / 60:.1f} min at this rate",
        flush=True,
    )
    print(run_header(args.database_url, "(the machine is shared: other work ran meanwhile)"))
    connections.close_all()
    if args.drop:
        import psycopg

        base, name = args.database_url.rsplit("/", 1)
        admin_url = base.replace("postgres://", "postgresql://", 1) + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"dropped {name}")


if __name__ == "__main__":
    main()
