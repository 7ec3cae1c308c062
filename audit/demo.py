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
# (setting, old, new) choices for the actions whose message names a change.
SETTING_CHANGES = {
    "org_settings_updated": [
        ("display name", "Acme Corp", "Acme Corporation"),
        ("default language", "English (US)", "English (UK)"),
        ("session duration", "30 days", "7 days"),
    ],
    "user_site_role_changed": [("role", "User", "Site admin"), ("role", "Site admin", "User")],
    "org_member_role_changed": [("role", "Member", "Organization admin")],
    "user_email_changed": [("email", "old.address@acme.test", "new.address@acme.test")],
    "org_plan_changed": [("plan", "Guard Standard", "Guard Premium")],
    "group_renamed": [("name", "eng", "engineering"), ("name", "mktg", "marketing")],
}
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
    """Realistic activity for one demo organization, oldest to newest.

    Seeding a million events spends much of its time here, so everything that
    depends only on the action (its product, who does it, what it acts on) is
    worked out once per action, the items that repeat (sites, groups, accounts,
    locations) are made once and shared, and draws use random() rather than
    randrange(), which is several times slower."""

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
            and a.key not in ("audit_log_purged", "user_login_failed")
        ] or list(ACTIONS)
        # Most real activity is people using products; admin changes are rarer.
        self.weights = [
            8 if a.category in ("user_created", "user_accounts") else 1 for a in self.actions
        ]
        self.recipes = {a.key: self._recipe(a) for a in self.actions}

    def _recipe(self, action) -> tuple:
        """(product or None for any, by an account?, base context, specific kind)."""
        category, key = action.category, action.key
        by_kind = {p.kind: p for p in reversed(self.products)}  # the first of each kind
        product = None
        if category == "user_created" and key.startswith("issue"):
            product = by_kind.get("jira")
        elif category in ("user_created", "exports") or key == "content_classified":
            product = by_kind.get("confluence")
        by_account = category in ("user_created", "user_accounts", "exports")
        base = ""
        if category in ("site_users", "organization") and "{user}" in action.template:
            base = "user"
        if category == "groups":
            base = "group+user" if "{user}" in action.template else "group"
        if key in (
            "page_created",
            "page_updated",
            "page_viewed",
            "page_deleted",
            "page_exported",
            "content_classified",
        ):
            kind = "page"
        elif key == "space_exported":
            kind = "space"
        elif key.startswith("issue_"):
            kind = "issue"
        elif category == "security_policies":
            kind = "policy"
        elif category == "classification":
            kind = "label"
        elif category == "api_tokens" or key.startswith("audit_log_api_key"):
            kind = "token"
        elif key.startswith("audit_log_webhook"):
            kind = "webhook"
        elif key == "activity_settings_updated":
            kind = "stored"
        elif key == "audit_log_exported":
            kind = "count"
        elif key in (
            "org_settings_updated",
            "user_site_role_changed",
            "org_member_role_changed",
            "user_email_changed",
            "org_plan_changed",
            "group_renamed",
        ):
            kind = "setting"
        elif key.startswith("domain_"):
            kind = "domain"
        elif key == "org_member_added":
            kind = "role"
        else:
            kind = ""
        return product, by_account, base, kind

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
        r = self.rng.random
        product, by_account, base, kind = self.recipes[action.key]
        # An account's own actions (sign-in, password) belong to no product.
        account_only = action.category == "user_accounts"
        if product is None and not account_only:
            product = self.products[int(r() * len(self.products))]
        accounts = self.account_items
        if by_account:
            actor = self.account_actors[int(r() * len(accounts))]
        else:
            actor = self.admins[int(r() * len(self.admins))]
        context: list[dict] = []
        container: list[dict] = [self.site_items[product.pk]] if product else []
        details: dict = {}
        if base == "user":
            context = [accounts[int(r() * len(accounts))]]
        elif base:
            context = [self.group_items[int(r() * len(self.group_items))]]
            if base == "group+user":
                context.append(accounts[int(r() * len(accounts))])
        if not kind:
            pass
        elif kind == "page":
            context = [item("page", 10000 + int(r() * 89999), PAGE_TITLES[int(r() * 10)])]
            container.append(item("space", int(r() * 100), SPACES[int(r() * len(SPACES))]))
        elif kind == "space":
            context = [item("space", int(r() * 100), SPACES[int(r() * len(SPACES))])]
        elif kind == "issue":
            context = [item("issue", int(r() * 10000), f"ENG-{1 + int(r() * 3999)}")]
        elif kind == "policy":
            context = [item("policy", int(r() * 20), POLICIES[int(r() * len(POLICIES))])]
        elif kind == "label":
            details["label"] = LABELS[int(r() * len(LABELS))]
        elif kind == "token":
            context = [item("token", int(r() * 1000), f"ci-token-{1 + int(r() * 8)}")]
        elif kind == "webhook":
            context = [item("webhook", int(r() * 3), "SIEM collector")]
        elif kind == "stored":
            details.update(old="Stored", new="Not stored")
        elif kind == "count":
            details["count"] = 10 + int(r() * 9990)
        elif kind == "setting":
            choices = SETTING_CHANGES[action.key]
            setting, old, new = choices[int(r() * len(choices))]
            details.update(setting=setting, old=old, new=new)
        elif kind == "domain":
            details["domain"] = "acme.test"
        elif kind == "role":
            details["role"] = "member"
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
