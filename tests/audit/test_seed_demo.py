from django.contrib.auth import authenticate
from django.core.management import call_command

from audit.models import ActivitySetting, Event
from orgs.models import Membership, Organization, User


def test_seed_demo_creates_the_demo_and_is_idempotent(db, capsys):
    call_command("seed_demo", events=300)
    out = capsys.readouterr().out
    assert "admin@acme.test / audit-demo" in out and "staff@acme.test / audit-demo" in out
    counts = (Organization.objects.count(), User.objects.count(), Event.objects.count())
    assert counts[0] == 4 and counts[1] >= 200 and counts[2] >= 250
    call_command("seed_demo", events=300)
    assert (Organization.objects.count(), User.objects.count(), Event.objects.count()) == counts

    admin = authenticate(email="admin@acme.test", password="audit-demo")
    assert admin is not None
    assert Membership.objects.filter(user=admin, role="admin").count() == 2
    assert authenticate(email="staff@acme.test", password="audit-demo").is_staff
    assert ActivitySetting.objects.filter(content_stored=False).count() == 1
    plans = set(Organization.objects.values_list("plan__key", flat=True))
    assert plans == {"none", "guard-standard", "guard-premium", "cloud-enterprise"}
    # Events follow each plan: nothing for the org without one, no user-created
    # activity on Guard Standard, every category the premium org's plan covers.
    assert not Event.objects.filter(organization__plan__key="none").exists()
    assert not Event.objects.filter(
        organization__plan__key="guard-standard", action__category="user_created"
    ).exists()
    premium = set(
        Event.objects.filter(organization__plan__key="guard-premium").values_list(
            "action__category", flat=True
        )
    )
    assert {"user_created", "groups", "user_accounts", "security_policies"} <= premium


def test_if_empty_leaves_an_existing_database_alone(db, org, capsys):
    call_command("seed_demo", events=100, if_empty=True)
    assert "not seeding" in capsys.readouterr().out
    assert Organization.objects.count() == 1
