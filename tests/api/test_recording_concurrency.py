"""Products will post batches of events (POST /ingest/v1/events, through
event_record_batch) at the same time and in any order of time. Two batches of one
organization that cover the same hours must both be recorded: never a deadlock."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from audit.models import Event
from audit.services import EventSpec, event_record_batch, item

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def test_concurrent_batches_over_the_same_hours_never_deadlock(org):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: no row locks to take out of order")
    now = timezone.now().replace(minute=30)
    hours = [now - timedelta(hours=h) for h in range(1, 40)]
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def run(times):
        try:
            barrier.wait(10)
            for _ in range(15):
                specs = [
                    EventSpec(
                        action="group_created", occurred_at=t, context=[item("group", 1, "g")]
                    )
                    for t in times
                ]
                event_record_batch(organization=org, specs=specs)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc)[:400])
        finally:
            connections.close_all()

    orders = [hours, hours[::-1], hours, hours[::-1]]  # newest first, oldest first
    threads = [threading.Thread(target=run, args=(times,)) for times in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert Event.objects.filter(organization=org).count() == 4 * 15 * len(hours)
