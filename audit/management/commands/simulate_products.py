"""manage.py simulate_products: the demo's products push activity to the ingest endpoint
every second or two (audit/simulator.py). `make run` starts it beside the web server and
the worker; Ctrl-C stops it."""

import json
import random
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.simulator import keys_path_default, rounds, simulated_products

TIMEOUT = 10


class Command(BaseCommand):
    help = "Push realistic product activity to POST /ingest/v1/events every second or two."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the app's address")
        parser.add_argument(
            "--keys", type=Path, help="the ingest keys seed_demo wrote (var/demo-ingest-keys.json)"
        )
        parser.add_argument(
            "--every", type=float, default=1.5, help="seconds between rounds, on average (1.5)"
        )
        parser.add_argument("--rounds", type=int, default=0, help="stop after N rounds (0: never)")
        parser.add_argument("--seed", type=int, help="random seed (reproducible activity)")

    def handle(self, *args, url: str, keys: Path | None, every: float, **options):
        path = keys or keys_path_default()
        try:
            secrets = {int(pk): secret for pk, secret in json.loads(path.read_text()).items()}
        except (OSError, ValueError) as exc:
            raise CommandError(f"No demo ingest keys in {path} ({exc}): run seed_demo.") from exc
        products = simulated_products(secrets)
        if not products:
            raise CommandError(f"None of the products in {path} exists: run seed_demo.")
        self.stderr.write(
            f"simulate_products: {len(products)} products pushing to {url}/ingest/v1/events"
        )
        stopping = False

        def stop(*_):
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        rng = random.Random(options["seed"])
        endpoint = url.rstrip("/") + "/ingest/v1/events"
        reported_down = False
        for done, batches in enumerate(rounds(products, rng), start=1):
            for simulated, events in batches:
                try:
                    line = _push(endpoint, simulated.secret, events)
                    reported_down = False
                except OSError as exc:  # the web server starting or gone: try again later
                    if not reported_down:
                        self.stderr.write(f"simulate_products: {endpoint} unreachable ({exc})")
                    reported_down = True
                    break
                product = simulated.product
                self.stdout.write(f"{product.site.organization.name} · {product.name} · {line}")
            if stopping or done == options["rounds"]:
                return
            time.sleep(every * rng.uniform(0.67, 1.33))
            if stopping:
                return


def _push(endpoint: str, secret: str, events: list[dict]) -> str:
    """POSTs `events`; what came of them, in one line."""
    request = urllib.request.Request(  # noqa: S310 - the operator's own URL
        endpoint,
        data=json.dumps({"events": events}).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310
            results = json.load(response)["results"]
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    actions = ", ".join(event["action"] for event in events)
    return f"{actions}: " + ", ".join(f"{n} {status}" for status, n in counts.items())
