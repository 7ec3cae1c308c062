"""Demo organizations and realistic activity, for `seed_demo` and the benchmarks."""

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from orgs.models import Group, Membership, Organization, Plan, Product, Site, User, VerifiedDomain

from .catalogue import ACTIONS, CATEGORY_BY_KEY
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


class ActivityGenerator:
    """Realistic activity for one demo organization, oldest to newest."""

    def __init__(self, org: Organization, seed: int = 1):
        self.org = org
        self.rng = random.Random(seed)
        self.products = list(Product.objects.filter(site__organization=org).select_related("site"))
        self.sites = list(Site.objects.filter(organization=org))
        self.groups = list(Group.objects.filter(organization=org))
        members = list(Membership.objects.filter(organization=org).select_related("user"))
        self.admins = [Actor.for_user(m.user) for m in members if m.role == Membership.Role.ADMIN]
        self.accounts = [m.user for m in members if m.role == Membership.Role.MEMBER]
        self.account_actors = [Actor.for_user(u) for u in self.accounts]
        self.account_items = [user_item(u) for u in self.accounts]
        plan = org.plan
        self.actions = [
            a
            for a in ACTIONS
            if plan.audit_log
            and getattr(plan, CATEGORY_BY_KEY[a.category].plan_field)
            and a.key not in ("audit_log_purged", "user_login_failed")
        ] or list(ACTIONS)
        # Most real activity is people using products; admin changes are rarer.
        self.weights = [
            8 if a.category in ("user_created", "user_accounts") else 1 for a in self.actions
        ]

    def specs(
        self, count: int, days: int = 180, now: datetime | None = None
    ) -> Iterator[EventSpec]:
        now = now or timezone.now()
        rng = self.rng
        span = days * 86400 - 60
        offsets = sorted((rng.random() * span for _ in range(count)), reverse=True)
        chosen = rng.choices(self.actions, weights=self.weights, k=count)
        for offset, action in zip(offsets, chosen, strict=True):
            yield self._spec(action, now - timedelta(seconds=offset))

    def _spec(self, action, occurred_at: datetime) -> EventSpec:
        rng = self.rng
        category = action.category
        product = rng.choice(self.products)
        if category == "user_created" and action.key.startswith("issue"):
            product = next((p for p in self.products if p.kind == "jira"), product)
        elif category in ("user_created", "exports") or action.key == "content_classified":
            product = next((p for p in self.products if p.kind == "confluence"), product)
        actor_index = rng.randrange(len(self.accounts))
        by_account = category in ("user_created", "user_accounts", "exports")
        actor = self.account_actors[actor_index] if by_account else rng.choice(self.admins)
        target = self.account_items[rng.randrange(len(self.accounts))]
        group = self.groups[rng.randrange(len(self.groups))]
        context: list[dict] = []
        container: list[dict] = [item("site", product.site.pk, product.site.name)]
        details: dict = {}
        if category in ("site_users", "organization") and "{user}" in action.template:
            context = [target]
        if category == "groups":
            context = [item("group", group.pk, group.name)]
            if "{user}" in action.template:
                context.append(target)
        if action.key in (
            "page_created",
            "page_updated",
            "page_viewed",
            "page_deleted",
            "page_exported",
            "content_classified",
        ):
            page_id = rng.randrange(10000, 99999)
            context = [item("page", page_id, rng.choice(PAGE_TITLES))]
            container.append(item("space", rng.randrange(100), rng.choice(SPACES)))
        elif action.key == "space_exported":
            context = [item("space", rng.randrange(100), rng.choice(SPACES))]
        elif action.key.startswith("issue_"):
            context = [item("issue", rng.randrange(10000), f"ENG-{rng.randrange(1, 4000)}")]
        elif category == "security_policies":
            context = [item("policy", rng.randrange(20), rng.choice(POLICIES))]
        elif category == "classification":
            details["label"] = rng.choice(LABELS)
        elif category == "api_tokens" or action.key.startswith("audit_log_api_key"):
            context = [item("token", rng.randrange(1000), f"ci-token-{rng.randrange(1, 9)}")]
        elif action.key.startswith("audit_log_webhook"):
            context = [item("webhook", rng.randrange(3), "SIEM collector")]
        elif action.key == "activity_settings_updated":
            details.update(old="Stored", new="Not stored")
        elif action.key == "audit_log_exported":
            details["count"] = rng.randrange(10, 10000)
        elif action.key in (
            "org_settings_updated",
            "user_site_role_changed",
            "org_member_role_changed",
            "user_email_changed",
            "org_plan_changed",
            "group_renamed",
        ):
            details.update(setting="display name", old="previous", new="current")
        elif action.key.startswith("domain_"):
            details["domain"] = "acme.test"
        elif action.key == "org_member_added":
            details["role"] = "member"
        country, region, city, prefix = LOCATIONS[rng.randrange(len(LOCATIONS))]
        return EventSpec(
            action=action.key,
            actor=actor,
            occurred_at=occurred_at,
            product=product,
            context=context,
            container=container,
            details=details,
            ip=f"{prefix}{rng.randrange(1, 255)}",
            user_agent=USER_AGENTS[rng.randrange(len(USER_AGENTS))],
            location=Location(country, region, city),
        )
