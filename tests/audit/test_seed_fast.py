"""The seed's fast path (audit.seed_fast) writes what the recorder writes."""

import ipaddress
import struct
from datetime import UTC, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit.catalogue import ACTIONS
from audit.demo import ActivityGenerator, demo_orgs_create
from audit.demo_load import customers_create
from audit.models import Event, EventHourlyCount, EventHourlyTotal, EventTerm
from audit.recording import EVENT_COLUMNS, Recorder, record_specs
from audit.seed_fast import COPY_COLUMNS, SeedBuilder, seed_specs
from audit.services import Actor, EventSpec, Location, item

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_BIGINTS = {"id", "organization_id", "action_id", "product_id"}
_TIMES = {"occurred_at", "recorded_at"}
_JSON = {"context", "container", "details"}


def _decode(row: bytes) -> dict:
    """A binary COPY tuple (COPY_COLUMNS) as Python values, read the way PostgreSQL
    reads it: bigints, timestamps as microseconds since 2000, jsonb as its version byte
    and text, inet as family, bits, is_cidr, length and address."""
    (count,) = struct.unpack_from(">h", row)
    assert count == len(COPY_COLUMNS)
    at, values = 2, {}
    for column in COPY_COLUMNS:
        (length,) = struct.unpack_from(">i", row, at)
        at += 4
        if length == -1:
            values[column] = None
            continue
        data, at = row[at : at + length], at + length
        if column in _BIGINTS:
            values[column] = struct.unpack(">q", data)[0]
        elif column in _TIMES:
            values[column] = _PG_EPOCH + timedelta(microseconds=struct.unpack(">q", data)[0])
        elif column in _JSON:
            assert data[0] == 1
            values[column] = data[1:].decode()
        elif column == "ip":
            family, bits, is_cidr, size = data[:4]
            assert (family, bits, is_cidr, size) in ((2, 32, 0, 4), (3, 128, 0, 16))
            values[column] = str(ipaddress.ip_address(data[4:]))
        elif column == "hash":
            values[column] = data
        else:
            values[column] = data.decode()
    assert at == len(row)
    return values


def _specs(org, count: int, seed: int) -> list[EventSpec]:
    """The demo's events of `org`, and one of every catalogue action (refused ones too)."""
    generator = ActivityGenerator(org, seed=seed)
    now = timezone.now()
    specs = list(generator.specs(count, days=180, now=now))
    return specs + [generator.spec(action, now - timedelta(hours=1)) for action in ACTIONS]


def _odd_specs(org) -> list[EventSpec]:
    """Events the generator never makes: no product, system and token actors, no
    location or address, an IPv6 address, non-ASCII and over-long values."""
    long = "é" * 600
    return [
        EventSpec(action="org_settings_updated", occurred_at=timezone.now()),
        EventSpec(
            action="auth_policy_updated",  # a whole second, in another zone
            occurred_at=timezone.now().replace(microsecond=0).astimezone(ZoneInfo("Asia/Kolkata")),
        ),
        EventSpec(
            action="user_logged_in",
            actor=Actor("user", "u9", "Zoë Ünicode", "zoe@acme.test"),
            occurred_at=timezone.now() - timedelta(days=3),
            ip="2001:db8::1",
            user_agent=long,
        ),
        EventSpec(
            action="api_token_used",
            actor=Actor.for_token(7, "ci-token"),
            context=[item("token", 7, "ci-token"), {"type": "user", "id": "1", "name": long}],
            details={"note": 'tab\tquote"', "count": 3},
            ip="203.0.113.7",
            location=Location("Brasil", "São Paulo", "São Paulo"),
        ),
    ]


def _expected(built, recorder) -> dict:
    """Recorder.build's row as the Python values PostgreSQL stores."""
    values = dict(zip(EVENT_COLUMNS, built.params, strict=True))
    values["occurred_at"], values["recorded_at"] = built.occurred_at, recorder.now
    values["hash"] = bytes(values["hash"])
    return values


def test_the_fast_path_builds_what_the_recorder_builds_field_by_field(db):
    demo = demo_orgs_create()
    orgs = [*demo, *customers_create(2)]
    fixed = timezone.now()
    compared = refused = 0
    for position, org in enumerate(orgs):
        specs = _specs(org, 1500, seed=position + 1) + _odd_specs(org)
        with mock.patch("django.utils.timezone.now", return_value=fixed):
            recorder, builder = Recorder(org), SeedBuilder(org)
        for n, spec in enumerate(specs):
            built = recorder.build(spec)
            seeded = builder.build(spec, 10_000 + n)
            if isinstance(built, str):
                assert seeded == built
                refused += 1
                continue
            row = _decode(seeded.row)
            assert row.pop("id") == seeded.event_id == 10_000 + n
            expected = _expected(built, recorder)
            for column in EVENT_COLUMNS:
                assert row[column] == expected[column], (org.name, spec.action, column)
            assert seeded.digest == expected["hash"]
            assert sorted(seeded.terms) == sorted(built.terms), spec.action
            assert seeded.occurred_at == built.occurred_at
            assert seeded.action_id == expected["action_id"]
            compared += 1
    assert compared > 5 * 1500 and refused  # Initech's plan records nothing


def _snapshot(org) -> tuple:
    """What is stored of the organization's events, by position (not id)."""
    fields = [c for c in EVENT_COLUMNS if c not in ("recorded_at",)]
    events = list(Event.objects.filter(organization=org).order_by("occurred_at", "id"))
    position = {event.pk: n for n, event in enumerate(events)}
    rows = [tuple(getattr(event, f) for f in fields) for event in events]
    # The (event, term) pairs the term rows hold: how a batch's pairs are grouped into
    # rows depends on its size (audit.recording.term_rows), what they say does not.
    held = EventTerm.objects.filter(organization=org).values_list(
        "term_hash", "event_id", "event_ids"
    )
    terms = sorted(
        (position[pk], digest, events[position[pk]].occurred_at)
        for digest, newest, ids in held
        for pk in (ids if ids is not None else [newest])
    )
    counts = sorted(
        EventHourlyCount.objects.filter(organization=org).values_list("hour", "action", "count")
    )
    totals = sorted(EventHourlyTotal.objects.filter(organization=org).values_list("hour", "count"))
    return rows, terms, counts, totals


class _Undo(Exception):
    pass


@pytest.mark.skipif(connection.vendor != "postgresql", reason="binary COPY: PostgreSQL only")
# In chunks (the hourly counts added to), or all the organization's events at once
# (written).
@pytest.mark.parametrize("chunk, alone", [(1000, False), (10_000, True)])
def test_the_fast_path_stores_what_record_specs_stores(db, chunk, alone):
    org = demo_orgs_create()[0]
    specs = _specs(org, 3000, seed=9) + _odd_specs(org)
    fixed = timezone.now()
    with mock.patch("django.utils.timezone.now", return_value=fixed):
        try:
            with transaction.atomic():
                ids, skipped = record_specs(org, specs, 1000)
                recorded = _snapshot(org)
                raise _Undo
        except _Undo:
            pass
        assert not Event.objects.filter(organization=org).exists()
        count = seed_specs(org, specs, chunk, alone=alone)
        assert count == len(ids) == len(specs) - len(skipped)
    seeded = _snapshot(org)
    assert len(seeded[0]) == len(ids) and len(seeded[1]) > 2 * len(ids)
    assert seeded == recorded
