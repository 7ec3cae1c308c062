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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_record import (  # noqa: E402
    database_drop,
    database_reset,
    django_setup,
    run_header,
    seed_arguments,
)

DEFAULT_URL = "postgres://auditlog@127.0.0.1:5432/bench_seed"


def parse_args() -> argparse.Namespace:
    parser = seed_arguments(__doc__.split("\n\n")[0], DEFAULT_URL)
    parser.add_argument("--drop", action="store_true", help="drop the database at the end")
    return parser.parse_args()


class BackendCPU:
    """CPU seconds of the PostgreSQL processes serving database `name` on this machine
    (Linux /proc): its backends and their parallel workers, sampled every 0.2 s by a
    thread (a process that ends between two looks loses at most that much). Other
    databases' work, and the server's own processes (WAL writer, checkpointer), are
    not counted."""

    def __init__(self, name: str):
        self.marker = f" {name} "
        self.seen: dict[int, float] = {}
        self.tick = os.sysconf("SC_CLK_TCK")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(self.seen.values())

    def _run(self) -> None:
        while not self.stop.is_set():
            self._look()
            self.stop.wait(0.2)
        self._look()

    def _look(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(entry.name)
            leader = title.partition("parallel worker for PID ")[2].split(" ")[0]
            if self.marker in title or (leader.isdigit() and int(leader) in self.seen):
                self.seen[pid] = (int(fields[11]) + int(fields[12])) / self.tick


def main() -> None:
    args = parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("PostgreSQL only")
    os.environ["AUDIT_SIGNING_KEY"] = ""
    os.environ["AUDIT_SIGNING_KEY_FILE"] = ""
    database_reset(args.database_url)
    django_setup(args.database_url)
    from django.core.management import call_command

    from audit.models import Event

    call_command("migrate", verbosity=0)
    print(run_header(args.database_url), flush=True)
    keys = Path(tempfile.mkdtemp(prefix="bench_seed_")) / "keys.json"
    started = time.perf_counter()
    cpu, server = os.times(), BackendCPU(args.database_url.rsplit("/", 1)[1])
    with server:
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
    python, postgres = (own + children) / total * 1e6, server.seconds / total * 1e6
    cpu_text = f"CPU per event: Python {python:.0f} us, PostgreSQL {postgres:.0f} us"
    print(
        f"seed: {total:,} events in {seconds:.1f} s ({total / seconds:,.0f} events/s, "
        f"{args.jobs} jobs; {cpu_text}): "
        f"20M would take ~{20e6 / (total / seconds) / 60:.1f} min at this rate, "
        f"~{20e6 * (python + postgres) / 1e6 / (os.cpu_count() or 1) / 60:.1f} min of this CPU "
        "on idle cores",
        flush=True,
    )
    print(run_header(args.database_url, "(the machine is shared: other work ran meanwhile)"))
    if args.drop:
        database_drop(args.database_url)
        print(f"dropped {args.database_url.rsplit('/', 1)[1]}")


if __name__ == "__main__":
    main()
