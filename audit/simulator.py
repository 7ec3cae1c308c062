"""The demo's product simulator: Jira, Confluence, Bitbucket and Jira Service Management
pushing their users' activity to POST /ingest/v1/events, as a real product would.

`seed_demo` gives each demo product with an audit log an ingest key of its own
(`simulator_keys_ensure`) and keeps the secrets in a file in VAR_DIR (git-ignored, mode
600): the database keeps only their hashes. `manage.py simulate_products` (started by
`make run`) reads that file and, every second or two, sends a few events of one
product of each demo organization over HTTP, so new rows appear at the top of the audit
log page while you watch. It reads the database only to draw realistic names (the
organization's members, groups, sites); everything it records goes through the
endpoint."""

import json
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from orgs.models import IngestKey, Product
from orgs.services import api_key_hash, ingest_key_create

from .catalogue import ACTIONS, Action
from .demo import CHANGES, CONTENT_PRODUCTS, DEMO_ORGS, ActivityGenerator, template_fields
from .models import Event
from .services import EventSpec

KEY_NAME = "Demo product simulator"
# Template fields an ingest event can fill: the names of its context and container
# items. (Ingest has no `details`, so actions that need a setting's old and new value,
# a count or a label are not simulated.)
ITEM_FIELDS = frozenset(
    {"actor", "user", "group", "site", "product", "page", "space", "issue", "token"}
)
INGEST_ACTOR_TYPES = {Event.ActorType.USER, Event.ActorType.API_TOKEN, Event.ActorType.SYSTEM}
CONTENT_WEIGHT = 8  # views and edits of pages and issues outnumber admin actions


def keys_path_default() -> Path:
    return Path(settings.VAR_DIR) / "demo-ingest-keys.json"


def _keys_read(path: Path) -> dict[int, str]:
    try:
        return {int(pk): secret for pk, secret in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def simulator_keys_ensure(path: Path) -> dict[int, str]:
    """An active ingest key for each product of an organization whose plan has the
    audit log, its secret kept in `path`: the keys already there when they still work
    (the database may have been seeded again since), new ones otherwise. {product id:
    secret}."""
    kept = _keys_read(path)
    products = Product.objects.filter(  # the demo's products only, never anyone else's
        site__organization__name__in=[demo.name for demo in DEMO_ORGS],
        site__name__in=[demo.site for demo in DEMO_ORGS],
        site__organization__plan__audit_log=True,
    ).order_by("pk")
    active = set(
        IngestKey.objects.filter(
            product__in=products, name=KEY_NAME, revoked_at__isnull=True
        ).values_list("product_id", "secret_hash")
    )
    keys = {}
    for product in products.select_related("site__organization"):
        secret = kept.get(product.pk)
        if secret is None or (product.pk, api_key_hash(secret)) not in active:
            secret = ingest_key_create(product=product, name=KEY_NAME, by=None)[1]
        keys[product.pk] = secret
    if keys != kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump({str(pk): secret for pk, secret in keys.items()}, out, indent=1)
    return keys


@dataclass
class SimulatedProduct:
    product: Product
    secret: str
    generator: ActivityGenerator
    actions: list[Action]
    weights: list[int]


def _simulated_actions(product: Product) -> tuple[list[Action], list[int]]:
    """The actions `product` would send: those whose message its items can fill, its own
    content activity (pages for Confluence, issues for Jira) but no other product's."""
    family = "jira" if product.kind.startswith("jira") else product.kind
    actions, weights = [], []
    for action in ACTIONS:
        fields = template_fields(action.template)
        if action.key in CHANGES or not fields <= ITEM_FIELDS or action.category == "audit_log":
            continue
        kinds = {CONTENT_PRODUCTS[f] for f in fields if f in CONTENT_PRODUCTS}
        if kinds and kinds != {family}:
            continue
        actions.append(action)
        weights.append(CONTENT_WEIGHT if kinds else 1)
    return actions, weights


def simulated_products(keys: dict[int, str]) -> list[SimulatedProduct]:
    """What `simulate_products` pushes for: each product of `keys` that still exists and
    has something to send."""
    found = Product.objects.filter(pk__in=keys).select_related("site__organization__plan")
    generators: dict[int, ActivityGenerator] = {}
    products = []
    for product in found.order_by("pk"):
        org = product.site.organization
        if org.pk not in generators:
            generators[org.pk] = ActivityGenerator(org, seed=random.randrange(2**32))
        actions, weights = _simulated_actions(product)
        if actions:
            products.append(
                SimulatedProduct(product, keys[product.pk], generators[org.pk], actions, weights)
            )
    return products


def _ingest_json(spec: EventSpec, product: Product) -> dict:
    """`spec` in the ingest vocabulary, sent by `product` (README, Ingest)."""
    actor = spec.actor
    if actor.type not in INGEST_ACTOR_TYPES:
        actor_json = {"type": "system"}
    else:
        actor_json = {"type": str(actor.type), "id": actor.id, "name": actor.name}
        if actor.email:
            actor_json["email"] = actor.email
    event = {
        "id": f"{product.kind}-{uuid.uuid4().hex[:16]}",
        "time": spec.occurred_at.isoformat(timespec="milliseconds"),
        "action": spec.action,
        "actor": actor_json,
        "context": spec.context,
        "container": spec.container,
        "ip": spec.ip,
        "userAgent": spec.user_agent,
    }
    if spec.location is not None:
        place = spec.location
        event["location"] = {
            "countryName": place.country,
            "regionName": place.region,
            "city": place.city,
        }
    return event


def simulated_batch(simulated: SimulatedProduct, rng: random.Random, size: int) -> list[dict]:
    """`size` events of `simulated`'s product, happening now."""
    now = timezone.now()
    chosen = rng.choices(simulated.actions, weights=simulated.weights, k=size)
    return [
        _ingest_json(simulated.generator.spec(action, now), simulated.product) for action in chosen
    ]


def rounds(products: list[SimulatedProduct], rng: random.Random) -> Iterator[list]:
    """Each round: one product of each organization, in turn, with 1 to 4 events."""
    by_org: dict[int, list[SimulatedProduct]] = {}
    for simulated in products:
        by_org.setdefault(simulated.product.site.organization_id, []).append(simulated)
    while True:
        yield [
            (simulated, simulated_batch(simulated, rng, rng.randint(1, 4)))
            for simulated in (rng.choice(choices) for choices in by_org.values())
        ]
