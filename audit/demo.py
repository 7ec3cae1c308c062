"""Demo organizations and realistic activity, for `seed_demo` and the benchmarks."""

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from string import Formatter

from django.db import transaction
from django.utils import timezone

from orgs.models import Group, Membership, Organization, Plan, Product, Site, User, VerifiedDomain

from .catalogue import ACTIONS, CATEGORY_BY_KEY, Action
from .models import ActivitySetting
from .services import Actor, EventSpec, Location, item, user_item

DEMO_PASSWORD = "audit-demo"
ADMIN_EMAIL = "admin@acme.test"
STAFF_EMAIL = "staff@acme.test"
MEMBER_EMAIL = "member@acme.test"

FIRST = (
    "Ada Alan Grace Linus Barbara Ken Margaret Dennis Frances Edsger Radia John Hedy "
    "Tim Katherine Donald Sophie Guido Anita Bjarne Joan Claude Mary Niklaus Lynn Vint "
    "Carol Whitfield Shafi Leslie Jean Yukihiro Adele Brian Evelyn Rasmus"
).split()
LAST = (
    "Lovelace Turing Hopper Torvalds Liskov Thompson Hamilton Ritchie Allen Dijkstra "
    "Perlman McCarthy Lamarr Berners-Lee Johnson Knuth Wilson Rossum Borg Stroustrup "
    "Clarke Shannon Keller Wirth Conway Cerf Shaw Diffie Goldwasser Lamport Sammet "
    "Matsumoto Goldberg Kernighan Berry Lerdorf"
).split()
LOCATIONS = [
    ("United States", "California", "San Francisco", "198.51.100."),
    ("United States", "New York", "New York", "198.51.101."),
    ("Australia", "New South Wales", "Sydney", "203.0.113."),
    ("Germany", "Berlin", "Berlin", "192.0.2."),
    ("United Kingdom", "England", "London", "198.18.0."),
    ("India", "Karnataka", "Bengaluru", "198.18.1."),
    ("Brazil", "São Paulo", "São Paulo", "198.18.2."),
    ("Japan", "Tokyo", "Tokyo", "198.18.3."),
]
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
]
PAGE_TITLES = [
    "Q3 roadmap",
    "Incident review 2026-04",
    "Onboarding checklist",
    "Pricing draft",
    "Architecture decision: queues",
    "Team offsite notes",
    "Security runbook",
    "Release notes 4.2",
    "Hiring plan",
    "Customer interview: Globex",
]
SPACES = ["Engineering", "Marketing", "People", "Security", "Product"]
POLICIES = ["Default policy", "Contractors", "Admins: 2SV required", "Single sign-on"]
LABELS = ["Public", "Internal", "Confidential", "Restricted"]
GROUP_NAMES = [
    "site-admins",
    "jira-software-users",
    "confluence-users",
    "engineering",
    "marketing",
    "contractors",
    "security-team",
    "bitbucket-users",
]


@dataclass(frozen=True)
class DemoOrg:
    name: str
    plan: str
    site: str
    domain: str
    products: tuple[str, ...]
    accounts: int
    admins: tuple[str, ...]
    share: float  # of the demo events
    not_stored: tuple[str, ...] = ()


DEMO_ORGS = [
    DemoOrg(
        "Acme Corporation",
        "guard-premium",
        "acme.example.net",
        "acme.test",
        ("jira", "confluence", "bitbucket"),
        110,
        (ADMIN_EMAIL,),
        0.6,
        ("jira",),
    ),
    DemoOrg(
        "Acme Labs",
        "cloud-enterprise",
        "acme-labs.example.net",
        "labs.acme.test",
        ("jira", "confluence", "jira-service-management"),
        45,
        (ADMIN_EMAIL,),
        0.25,
    ),
    DemoOrg(
        "Globex",
        "guard-standard",
        "globex.example.net",
        "globex.test",
        ("jira", "confluence"),
        35,
        ("admin@globex.test",),
        0.15,
    ),
    DemoOrg(
        "Initech",
        "none",
        "initech.example.net",
        "initech.test",
        ("jira",),
        10,
        ("admin@initech.test",),
        0.0,
    ),
]


def _user(email: str, name: str, password: str | None = None, **extra) -> User:
    user = User.objects.filter(email=email).first()
    if user is None:
        user = User.objects.create_user(email, password, name=name, **extra)
    return user


@transaction.atomic
def demo_orgs_create() -> list[Organization]:
    """Creates (or finds) the demo organizations, accounts, groups and settings."""
    rng = random.Random(7)
    _user(STAFF_EMAIL, "Sam Staff", DEMO_PASSWORD, is_staff=True, is_superuser=True)
    orgs = []
    for demo in DEMO_ORGS:
        org = Organization.objects.filter(name=demo.name).first()
        if org is None:
            org = Organization.objects.create(name=demo.name, plan=Plan.objects.get(key=demo.plan))
        orgs.append(org)
        VerifiedDomain.objects.get_or_create(organization=org, domain=demo.domain)
        site, _ = Site.objects.get_or_create(organization=org, name=demo.site)
        for kind in demo.products:
            product, _ = Product.objects.get_or_create(site=site, kind=kind)
            if kind in demo.not_stored:
                ActivitySetting.objects.update_or_create(
                    organization=org, product=product, defaults={"content_stored": False}
                )
        for email in demo.admins:
            admin = _user(
                email, "Avery Admin" if email == ADMIN_EMAIL else "Org Admin", DEMO_PASSWORD
            )
            Membership.objects.update_or_create(
                organization=org, user=admin, defaults={"role": Membership.Role.ADMIN}
            )
        if demo.name == "Acme Corporation":
            member = _user(MEMBER_EMAIL, "Morgan Member", DEMO_PASSWORD)
            Membership.objects.get_or_create(organization=org, user=member)
        accounts = []
        for n in range(demo.accounts):
            first, last = FIRST[n % len(FIRST)], LAST[(n * 7 + len(demo.name)) % len(LAST)]
            managed = n % 4 != 3
            domain = demo.domain if managed else "contractor.example"
            email = f"{first}.{last}{n}@{domain}".lower()
            accounts.append(_user(email, f"{first} {last}"))
        for account in accounts:
            Membership.objects.get_or_create(organization=org, user=account)
        for name in GROUP_NAMES:
            group, created = Group.objects.get_or_create(organization=org, name=name)
            if created:
                group.members.set(rng.sample(accounts, k=min(len(accounts), 12)))
    return orgs


# What the message templates cannot say, by category: whose actions they are (one of
# the organization's accounts, else an admin), which belong to no product (an
# account's own: sign-in, password), and where most activity is (people using
# products; admin changes are rarer).
ACCOUNT_CATEGORIES = frozenset({"user_created", "user_accounts", "exports"})
NO_PRODUCT_CATEGORIES = frozenset({"user_accounts"})
BUSY_CATEGORIES = frozenset({"user_created", "user_accounts"})
BUSY_WEIGHT = 8
# The product kind whose content a template field names.
CONTENT_PRODUCTS = {"page": "confluence", "space": "confluence", "issue": "jira"}
# Items the demo makes up, by template field: (first id, how many ids, names: a list
# to draw one from, or the one name).
MADE_UP_ITEMS: dict[str, tuple[int, int, list[str] | str]] = {
    "page": (10000, 89999, PAGE_TITLES),
    "space": (0, 100, SPACES),
    "issue": (0, 10000, [f"ENG-{n}" for n in range(1, 4000)]),
    "policy": (0, 20, POLICIES),
    "token": (0, 1000, [f"ci-token-{n}" for n in range(1, 9)]),
    "webhook": (0, 3, "SIEM collector"),
}
# Details by template field: a list (or range) to draw one from, or the one value.
# {plan} is the organization's own plan.
DETAIL_VALUES: dict[str, Sequence | str] = {
    "label": LABELS,
    "count": range(10, 10000),
    "domain": "acme.test",
    "role": "member",
    "reason": [
        "the receiver answered 410 Gone.",
        "10 deliveries in a row failed since 2026-05-04 09:12 UTC (last: Timed out).",
    ],
    "events": range(1000, 100000),
    "blocks": range(1, 30),
    "problem": "Event 4711 in block 2 was changed after it was recorded",
}
# What an action's {setting}, {old} and {new} stand for: a list to draw one from, or
# the one change it always is.
CHANGES: dict[str, list[dict[str, str]] | dict[str, str]] = {
    "org_settings_updated": [
        {"setting": "display name", "old": "Acme Corp", "new": "Acme Corporation"},
        {"setting": "default language", "old": "English (US)", "new": "English (UK)"},
        {"setting": "session duration", "old": "30 days", "new": "7 days"},
    ],
    "user_site_role_changed": [
        {"setting": "role", "old": "User", "new": "Site admin"},
        {"setting": "role", "old": "Site admin", "new": "User"},
    ],
    "org_member_role_changed": [{"setting": "role", "old": "Member", "new": "Organization admin"}],
    "user_email_changed": [
        {"setting": "email", "old": "old.address@acme.test", "new": "new.address@acme.test"}
    ],
    "org_plan_changed": [{"setting": "plan", "old": "Guard Standard", "new": "Guard Premium"}],
    "org_plan_updated": [
        {"setting": "retention days", "old": "180", "new": "365"},
        {"setting": "API token usage", "old": "off", "new": "on"},
    ],
    "group_renamed": [
        {"setting": "name", "old": "eng", "new": "engineering"},
        {"setting": "name", "old": "mktg", "new": "marketing"},
    ],
    "activity_settings_updated": {"old": "Stored", "new": "Not stored"},
}

# A draw fills template fields: draw(random, context, container, details).
Draw = Callable[[Callable[[], float], list[dict], list[dict], dict], None]


def _picker(values: Sequence | object) -> Callable[[Callable[[], float]], object]:
    """Picks one of `values` (a list, tuple or range) with the generator's random(),
    or is `values` itself (anything else: a fixed value draws nothing)."""
    if isinstance(values, list | tuple | range):
        n = len(values)
        return lambda r: values[int(r() * n)]
    return lambda r: values


def _context_draw(pick: Callable) -> Draw:
    def draw(r, context, container, details):
        context.append(pick(r))

    return draw


def _detail_draw(field: str, pick: Callable) -> Draw:
    def draw(r, context, container, details):
        details[field] = pick(r)

    return draw


def _change_draw(pick: Callable) -> Draw:
    def draw(r, context, container, details):
        details.update(pick(r))

    return draw


def _made_up(kind: str, first: int, ids: int, names: list[str] | str) -> Callable:
    name = _picker(names)
    return lambda r: item(kind, first + int(r() * ids), name(r))  # the id, then the name


def template_fields(template: str) -> set[str]:
    """The str.format fields a message template names."""
    return {name for _, name, _, _ in Formatter().parse(template) if name}


class ActivityGenerator:
    """Realistic activity for one demo organization, oldest to newest.

    Each action's message template says what its events need ({user}, {group},
    {page} ...): the generator draws a value for every field the recorder does not
    fill itself, from the tables above. Seeding a million events spends much of its
    time here, so everything that depends only on the action (its product, who does
    it, what to draw) is worked out once per action, the items that repeat (sites,
    groups, accounts, locations) are made once and shared, and draws use random()
    rather than randrange(), which is several times slower."""

    def __init__(self, org: Organization, seed: int = 1):
        self.org = org
        self.rng = random.Random(seed)
        self.products = list(Product.objects.filter(site__organization=org).select_related("site"))
        self.sites = list(Site.objects.filter(organization=org))
        self.groups = list(Group.objects.filter(organization=org))
        members = list(
            Membership.objects.filter(organization=org).select_related("user").order_by("pk")
        )
        self.admins = [Actor.for_user(m.user) for m in members if m.role == Membership.Role.ADMIN]
        self.accounts = [m.user for m in members if m.role == Membership.Role.MEMBER]
        self.account_actors = [Actor.for_user(u) for u in self.accounts]
        self.account_items = [user_item(u) for u in self.accounts]
        self.group_items = [item("group", g.pk, g.name) for g in self.groups]
        self.site_items = {p.pk: item("site", p.site.pk, p.site.name) for p in self.products}
        self.locations = [
            (Location(country, region, city), [f"{prefix}{n}" for n in range(1, 255)])
            for country, region, city, prefix in LOCATIONS
        ]
        plan = org.plan
        self.actions = [
            a
            for a in ACTIONS
            if plan.audit_log
            and getattr(plan, CATEGORY_BY_KEY[a.category].plan_field)
            # The system's own: a made-up verification, failed at that, would mislead.
            and a.key
            not in (
                "audit_log_purged",
                "user_login_failed",
                "audit_log_verified",
                "audit_log_verification_failed",
            )
        ] or list(ACTIONS)
        self.weights = [BUSY_WEIGHT if a.category in BUSY_CATEGORIES else 1 for a in self.actions]
        self.draws = self._draws(plan.name)
        self.recipes = {a.key: self._recipe(a) for a in ACTIONS}

    def _draws(self, plan_name: str) -> dict[str, Draw]:
        """The draw for each template field the recorder does not fill, in the order
        an event's fields are drawn."""
        made = {field: _made_up(field, *spec) for field, spec in MADE_UP_ITEMS.items()}
        page, space = made["page"], made["space"]

        def page_in_space(r, context, container, details):
            context.append(page(r))
            container.append(space(r))

        draws = {
            "group": _context_draw(_picker(self.group_items)),
            "user": _context_draw(_picker(self.account_items)),
            "page": page_in_space,
        }
        for field, make in made.items():
            draws.setdefault(field, _context_draw(make))
        for field, values in {**DETAIL_VALUES, "plan": plan_name}.items():
            draws[field] = _detail_draw(field, _picker(values))
        return draws

    def _recipe(self, action: Action) -> tuple:
        """(product, or None; draw one?; who may act; draws that fill the fields)."""
        fields = template_fields(action.template)
        kind = next((CONTENT_PRODUCTS[f] for f in sorted(fields) if f in CONTENT_PRODUCTS), "")
        by_kind = {p.kind: p for p in reversed(self.products)}  # the first of each kind
        product = by_kind.get(kind)
        any_product = product is None and action.category not in NO_PRODUCT_CATEGORIES
        actors = self.account_actors if action.category in ACCOUNT_CATEGORIES else self.admins
        if "page" in fields:
            fields.discard("space")  # the page's space, drawn with it as its container
        draws = [draw for field, draw in self.draws.items() if field in fields]
        if action.key in CHANGES:
            draws.append(_change_draw(_picker(CHANGES[action.key])))
        return product, any_product, actors, draws

    def specs(
        self, count: int, days: int = 180, now: datetime | None = None
    ) -> Iterator[EventSpec]:
        now = now or timezone.now()
        rng = self.rng
        span = days * 86400 - 60
        offsets = sorted((rng.random() * span for _ in range(count)), reverse=True)
        chosen = rng.choices(self.actions, weights=self.weights, k=count)
        for offset, action in zip(offsets, chosen, strict=True):
            yield self.spec(action, now - timedelta(seconds=offset))

    def spec(self, action: Action, occurred_at: datetime) -> EventSpec:
        """One event of `action` (any catalogue action), with a value for every field
        its message names."""
        r = self.rng.random
        product, any_product, actors, draws = self.recipes[action.key]
        if any_product:
            product = self.products[int(r() * len(self.products))]
        actor = actors[int(r() * len(actors))]
        context: list[dict] = []
        container: list[dict] = [self.site_items[product.pk]] if product else []
        details: dict = {}
        for draw in draws:
            draw(r, context, container, details)
        location, ips = self.locations[int(r() * len(self.locations))]
        return EventSpec(
            action=action.key,
            actor=actor,
            occurred_at=occurred_at,
            product=product,
            context=context,
            container=container,
            details=details,
            ip=ips[int(r() * len(ips))],
            user_agent=USER_AGENTS[int(r() * len(USER_AGENTS))],
            location=location,
        )


# The demo's stream: Acme Labs sends its activity to `manage.py stream_receiver`,
# which `make run` (manage.py serve) starts on this port.
DEMO_RECEIVER_PORT = 8025
DEMO_STREAM_NAME = "Local receiver (demo)"


def demo_stream_create(org: Organization) -> str:
    """Acme Labs' demo stream, unless it has one; says what was done."""
    from .streams import Author, StreamRefused, stream_create

    if org.streams.exists():
        return f"{org.name} already has a stream."
    try:
        stream, _ = stream_create(
            organization=org,
            name=DEMO_STREAM_NAME,
            url=f"http://127.0.0.1:{DEMO_RECEIVER_PORT}/",
            by=Author(),
        )
    except StreamRefused as exc:
        return f"No demo stream: {exc}"
    return f"{org.name} streams to {stream.url} (manage.py stream_receiver prints what arrives)."
