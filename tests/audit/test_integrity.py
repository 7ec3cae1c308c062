"""Tamper evidence: hashes written as events are recorded, signed and chained Merkle
blocks, verification on the server (audit_verify) and away from it (python -m
audit.verify, run with only the standard library and cryptography)."""

import base64
import hashlib
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from audit import verify
from audit.guard import append_only_install
from audit.integrity import (
    Outcome,
    block_contents,
    block_header,
    event_proof,
    orgs_with_new_events,
    public_keys,
    seal_all,
    seal_org,
    verify_and_record,
    verify_org,
)
from audit.models import Block, Event
from audit.retention import audit_log_purge
from audit.services import Actor, Location, event_record, item
from audit.tasks import audit_log_verify_daily
from orgs.models import Organization
from tests.conftest import GuardEditor, in_threads, make_user, record, seal
from tests.conftest import verify_offline as standalone

POSTGRES = connection.vendor == "postgresql"
postgres_only = pytest.mark.skipif(not POSTGRES, reason="PostgreSQL")
# PostgreSQL seals only events whose transaction has ended, so there the tests commit
# for real (a test's own transaction would hold every event it records back).
pytestmark = pytest.mark.django_db(transaction=POSTGRES, serialized_rollback=POSTGRES)


@pytest.fixture
def unguarded(db):
    """The append-only triggers dropped, as a database owner could: the tampering the
    integrity checks must catch."""
    tables = ("audit_event", "audit_block")
    suffixes = ("no_update", "no_delete", "no_truncate", "no_replace")
    with connection.cursor() as cursor:
        for table in tables:
            for suffix in suffixes:
                on = f" ON {table}" if connection.vendor == "postgresql" else ""
                cursor.execute(f"DROP TRIGGER IF EXISTS {table}_{suffix}{on}")
    yield sql
    append_only_install(GuardEditor())


def sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, list(params))


def events(org, n: int, start: int = 0) -> list[Event]:
    return [record(org, context=[item("group", i, f"group {i}")]) for i in range(start, start + n)]


def sealed(org, n: int = 7, block_events: int = 3) -> list[Event]:
    """`n` events sealed in blocks of `block_events`."""
    made = events(org, n)
    assert seal(org, block_events=block_events) == n
    return made


def problem(org) -> Outcome:
    outcome = verify_org(org)
    assert not outcome.ok
    return outcome


def block_file(org, sequence: int, tmp_path: Path) -> str:
    path = tmp_path / f"block-{sequence}.json"
    path.write_text(json.dumps({"data": block_contents(org, sequence)}))
    return str(path)


def digests_file(org, tmp_path: Path) -> str:
    blocks = Block.objects.filter(organization=org).order_by("sequence")
    path = tmp_path / "digests.json"
    path.write_text(json.dumps({"data": [{"attributes": block_header(b)} for b in blocks]}))
    return str(path)


def proof_file(org, event, tmp_path: Path) -> str:
    proof, why = event_proof(org, event)
    assert proof is not None, why
    path = tmp_path / f"proof-{event.pk}.json"
    path.write_text(json.dumps({"data": proof}))
    return str(path)


# -- the hash ----------------------------------------------------------------------------


def test_the_hash_is_the_canonical_serialization_the_same_on_every_database(org, jira, admin):
    when = datetime(2026, 11, 30, 14, 2, 3, 450000, tzinfo=UTC)
    event = event_record(
        organization=org,
        action="group_member_added",
        actor=Actor.for_user(admin),
        occurred_at=when,
        product=jira,
        context=[{"type": "user", "name": "Zoë 🚀", "id": "7", "email": "zoe@acme.test"}],
        container=[item("group", 1, "ops")],
        ip="2001:DB8::1",
        user_agent="Mozilla/5.0",
        location=Location("Germany", "Berlin", "Berlin"),
    ).event
    stored = Event.objects.get(pk=event.pk)
    recorded = stored.recorded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    expected = (
        f'["ev1",{org.pk},"2026-11-30T14:02:03.450000Z","{recorded}","group_member_added",'
        f'"user","{admin.pk}","Alice Admin","alice@acme.test",{jira.pk},"jira",'
        '"acme.example.net",'
        r'"[{\"email\":\"zoe@acme.test\",\"id\":\"7\",\"name\":\"Zo\\u00eb \\ud83d\\ude80\",'
        r'\"type\":\"user\"}]","[{\"id\":\"1\",\"name\":\"ops\",\"type\":\"group\"}]","","{}",'
        '"2001:db8::1","Mozilla/5.0","Germany","Berlin","Berlin",'
        f"{json.dumps(stored.message)}]"
    )
    assert bytes(stored.hash) == hashlib.sha256(expected.encode()).digest()
    # What a verifier derives from the stored row is that same text.
    seal(org)
    proof, _ = event_proof(org, stored)
    assert verify.event_canonical(verify.event_values(proof["event"])).decode() == expected


def test_an_event_without_a_stored_hash_is_hashed_from_its_row_when_sealed(org, unguarded):
    old = record(org)
    sql("UPDATE audit_event SET hash = NULL WHERE id = %s", [old.pk])  # as before 0014
    assert seal(org) == 1
    assert verify_org(org).ok


def test_merkle_proofs_lead_to_the_root_for_every_leaf_of_every_size():
    for size in range(1, 18):
        leaves = [verify.leaf_data(i, hashlib.sha256(bytes([i])).digest()) for i in range(size)]
        root = verify.merkle_root(leaves)
        for index in range(size):
            path = verify.audit_path(leaves, index)
            assert verify.root_from_path(leaves[index], index, size, path) == root
            if size > 1:
                with pytest.raises(verify.VerifyError):
                    wrong = verify.root_from_path(leaves[index], index, size, path[:-1])
                    assert wrong == root, "a shortened path must not lead to the root"


def test_the_merkle_root_is_rfc_6962s():
    def mth(data):  # the RFC's recursive definition
        if len(data) == 1:
            return hashlib.sha256(b"\x00" + data[0]).digest()
        k = 1 << ((len(data) - 1).bit_length() - 1)
        return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()

    for size in (1, 2, 3, 5, 8, 13):
        leaves = [bytes([i]) * 40 for i in range(size)]
        assert verify.merkle_root(leaves) == mth(leaves)


# -- sealing -----------------------------------------------------------------------------


def test_sealing_chains_signed_blocks_in_recording_order_once(org):
    made = sealed(org, n=7, block_events=3)
    blocks = list(Block.objects.filter(organization=org).order_by("sequence"))
    assert [(b.sequence, b.event_count, b.total_events) for b in blocks] == [
        (1, 3, 3),
        (2, 3, 6),
        (3, 1, 7),
    ]
    assert blocks[0].first_event_id == made[0].pk and blocks[-1].last_event_id == made[-1].pk
    assert blocks[1].previous_hash == blocks[0].block_hash
    assert seal_org(org.pk) == 0  # idempotent
    outcome = verify_org(org)
    assert outcome.ok and outcome.blocks == 3 and outcome.events == 7


def test_the_sealing_round_finds_exactly_the_organizations_with_unsealed_events(org, other_org):
    """One query names the organizations to seal (seal_all): none, one, both; and an
    organization whose every event is sealed drops out."""
    quiet = Organization.objects.create(name="Quiet", plan=other_org.plan)  # no events
    assert orgs_with_new_events() == []
    events(org, 2)
    assert orgs_with_new_events() == [org.pk]
    sealed(other_org, n=4)
    assert orgs_with_new_events() == [org.pk]
    events(other_org, 1)
    record(org, ago=timedelta(days=40))  # a late event with an old time counts too
    assert orgs_with_new_events() == sorted([org.pk, other_org.pk])
    assert quiet.pk not in orgs_with_new_events()
    deadline = time.monotonic() + 60
    while orgs_with_new_events():  # on PostgreSQL an open transaction elsewhere may hold
        assert time.monotonic() < deadline  # the horizon back for a moment
        seal_all()
    totals = {
        o.pk: Block.objects.filter(organization=o).order_by("sequence").last().total_events
        for o in (org, other_org)
    }
    assert totals == {org.pk: 3, other_org.pk: 5}


def test_an_event_recorded_late_with_an_old_time_goes_into_the_next_block(org):
    sealed(org, n=3)
    late = record(org, ago=timedelta(days=3))
    assert seal(org) == 1
    block = Block.objects.get(organization=org, sequence=2)
    assert block.first_event_id == late.pk and verify_org(org).ok


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_two_sealers_at_once_seal_each_event_once(org):
    events(org, 40)
    results = in_threads(lambda: seal_org(org.pk, block_events=7), 2)
    assert sum(results) + seal(org, block_events=7) == 40
    blocks = list(Block.objects.filter(organization=org).order_by("sequence"))
    assert [b.sequence for b in blocks] == list(range(1, 7))
    assert blocks[-1].total_events == 40 and verify_org(org).ok


@postgres_only
def test_an_event_committed_during_sealing_is_sealed_later_never_inside_a_sealed_span(org):
    import threading

    first = record(org)
    in_flight, go_on = threading.Event(), threading.Event()
    late = {}

    def slow_writer():
        try:
            with transaction.atomic():
                # Its transaction began before the seal. (Another hour than the others:
                # the hourly count row it locks would make them wait for it.)
                late["event"] = record(org, ago=timedelta(hours=3))
                in_flight.set()
                go_on.wait(120)
        finally:
            connection.close()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    in_flight.wait(10)
    after = record(org, ago=timedelta(hours=5))  # committed after the open one began
    deadline = time.monotonic() + 60
    while not seal_org(org.pk):  # only what is below the horizon: `first`
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert seal_org(org.pk) == 0  # `after` waits for the transaction begun before it
    go_on.set()
    writer.join()
    assert seal(org) == 2
    second = Block.objects.get(organization=org, sequence=2)
    assert {second.first_event_id, second.last_event_id} == {late["event"].pk, after.pk}
    assert Block.objects.get(organization=org, sequence=1).last_event_id == first.pk
    assert verify_org(org).ok


# -- tampering: caught by audit_verify and by the standalone verifier -------------------


def test_a_field_changed_by_raw_sql_is_caught(org, unguarded, tmp_path):
    made = sealed(org)
    sql("UPDATE audit_event SET actor_name = 'Mallory' WHERE id = %s", [made[4].pk])
    outcome = problem(org)
    assert outcome.block == 2 and outcome.event == made[4].pk
    assert "changed after it was recorded" in outcome.problem
    result = standalone("proof", proof_file(org, made[4], tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and "do not match its hash" in result.stderr
    result = standalone("block", block_file(org, 2, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and f"Event {made[4].pk} in block 2 was changed" in result.stderr


def test_a_field_and_its_hash_changed_together_are_caught(org, unguarded, tmp_path):
    made = sealed(org)
    sql("UPDATE audit_event SET actor_name = 'Mallory' WHERE id = %s", [made[4].pk])
    row = Event.objects.get(pk=made[4].pk)
    proof, _ = event_proof(org, row)
    rehashed = verify.event_hash(verify.event_values(proof["event"]))
    sql("UPDATE audit_event SET hash = %s WHERE id = %s", [rehashed, made[4].pk])
    outcome = problem(org)
    assert outcome.block == 2 and outcome.event == made[4].pk
    result = standalone("block", block_file(org, 2, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and f"Event {made[4].pk} is not what block 2" in result.stderr


def test_a_deleted_event_is_caught(org, unguarded, tmp_path):
    made = sealed(org)
    sql("DELETE FROM audit_event WHERE id = %s", [made[3].pk])
    outcome = problem(org)
    assert outcome.block == 2 and "missing" in outcome.problem
    result = standalone("block", block_file(org, 2, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and "sealed in block 2 before event" in result.stderr


def test_an_event_inserted_into_a_sealed_span_is_caught(org, other_org, unguarded, tmp_path):
    made = events(org, 2)
    gap = record(other_org)  # an id between the organization's events, on either database
    events(org, 1)
    assert seal(org) == 3
    sql("DELETE FROM audit_event WHERE id = %s", [gap.pk])
    # A forged copy of the second event at the free id: on PostgreSQL with its
    # transaction id, so that in recording order it lies inside the sealed block.
    columns = [f.column for f in Event._meta.concrete_fields if f.column not in ("id", "message")]
    listed = ", ".join(columns)
    sql(
        f"INSERT INTO audit_event (id, message, {listed}) SELECT %s, 'forged', {listed} "
        "FROM audit_event WHERE id = %s",
        [gap.pk, made[1].pk],
    )
    inserted = Event.objects.get(pk=gap.pk)
    outcome = problem(org)
    assert outcome.block == 1 and outcome.event == gap.pk
    result = standalone("proof", proof_file(org, inserted, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1
    result = standalone("block", block_file(org, 1, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and f"Event {gap.pk} " in result.stderr


def test_two_swapped_events_are_caught(org, unguarded, tmp_path):
    made = sealed(org)
    a, b = made[3].pk, made[4].pk
    columns = [f.column for f in Event._meta.concrete_fields if f.column not in ("id", "txid")]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM audit_event WHERE id = %s", [a])
        row_a = cursor.fetchone()
        cursor.execute(f"SELECT {', '.join(columns)} FROM audit_event WHERE id = %s", [b])
        row_b = cursor.fetchone()
        assign = ", ".join(f"{c} = %s" for c in columns)
        cursor.execute(f"UPDATE audit_event SET {assign} WHERE id = %s", [*row_b, a])
        cursor.execute(f"UPDATE audit_event SET {assign} WHERE id = %s", [*row_a, b])
    outcome = problem(org)
    assert outcome.block == 2 and outcome.event in (a, b)
    result = standalone("block", block_file(org, 2, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and "block 2" in result.stderr


def test_a_changed_block_header_is_caught(org, unguarded, tmp_path):
    sealed(org)
    sql(
        "UPDATE audit_block SET event_count = event_count - 1, total_events = total_events - 1 "
        "WHERE organization_id = %s AND sequence = 2",
        [org.pk],
    )
    outcome = problem(org)
    assert outcome.block == 2 and "does not match its hash" in outcome.problem
    result = standalone("digests", digests_file(org, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and "Block 2 was changed" in result.stderr


def test_a_block_removed_from_the_middle_is_caught(org, unguarded, tmp_path):
    sealed(org)
    sql("DELETE FROM audit_block WHERE organization_id = %s AND sequence = 2", [org.pk])
    outcome = problem(org)
    assert outcome.block == 3 and "Block 2 is missing" in outcome.problem
    result = standalone("digests", digests_file(org, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and "Block 2 is missing" in result.stderr


def test_a_signature_from_another_key_is_caught(org, unguarded, tmp_path):
    sealed(org)
    block = Block.objects.get(organization=org, sequence=2)
    other = Ed25519PrivateKey.generate()
    forged = base64.b64encode(other.sign(bytes.fromhex(block.block_hash))).decode()
    sql("UPDATE audit_block SET signature = %s WHERE id = %s", [forged, block.pk])
    outcome = problem(org)
    assert outcome.block == 2 and "signature" in outcome.problem
    result = standalone("digests", digests_file(org, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 1 and "Block 2 has a signature" in result.stderr


def test_a_chain_resigned_with_another_key_is_not_trusted(org, tmp_path):
    sealed(org)
    other = Ed25519PrivateKey.generate()
    raw = verify.public_raw(other.public_key())
    stranger = {"keyId": "x", "publicKey": base64.b64encode(raw).decode()}
    result = standalone("digests", digests_file(org, tmp_path), tmp_path=tmp_path, keys=[stranger])
    assert result.returncode == 1 and "not a key you trust" in result.stderr


def test_audit_verify_exits_1_naming_the_first_bad_block_and_event(org, unguarded, capsys):
    made = sealed(org)
    sql("UPDATE audit_event SET message = 'nothing happened' WHERE id = %s", [made[1].pk])
    with pytest.raises(SystemExit) as exit_:
        call_command("audit_verify", "--org", str(org.pk))
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert f"FAILED at block 1, event {made[1].pk}" in err


# -- not flagged -------------------------------------------------------------------------


def test_the_chain_verifies_after_retention_purges(org, tmp_path):
    now = datetime.now(UTC)
    old = [record(org, ago=timedelta(days=200)) for _ in range(3)]
    kept = events(org, 3)
    assert seal(org, block_events=2) == 6
    audit_log_purge(now=now)
    assert not Event.objects.filter(pk__in=[e.pk for e in old]).exists()
    outcome = verify_org(org)
    assert outcome.ok, outcome.problem
    assert outcome.retention_note.startswith("Events before ")
    assert "removed by retention on" in outcome.retention_note
    assert standalone("digests", digests_file(org, tmp_path), tmp_path=tmp_path).returncode == 0
    result = standalone("proof", proof_file(org, kept[0], tmp_path), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    for sequence in (1, 2):  # one block all purged, one half
        result = standalone("block", block_file(org, sequence, tmp_path), tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "removed by retention" in result.stdout


def test_the_standalone_verifier_checks_the_digest_chain_and_a_block(org, tmp_path):
    sealed(org)
    result = standalone("digests", digests_file(org, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK: blocks 1 to 3 chain and are signed; 7 events sealed" in result.stdout
    result = standalone("block", block_file(org, 2, tmp_path), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK: block 2 is signed and its 3 stored events are the 3 it sealed." in result.stdout


def test_inclusion_proofs_verify_for_the_first_last_and_a_middle_event(org, tmp_path):
    made = sealed(org, n=5, block_events=5)
    for event, index in ((made[0], 0), (made[2], 2), (made[4], 4)):
        proof, _ = event_proof(org, event)
        assert proof["leaf_index"] == index
        result = standalone("proof", proof_file(org, event, tmp_path), tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"OK: event {event.pk} is leaf {index} of block 1" in result.stdout


def test_key_rotation_keeps_old_blocks_verifiable(org, settings, tmp_path):
    sealed(org, n=2)
    old_public = public_keys()[0]["publicKey"]
    settings.AUDIT_SIGNING_KEY = base64.b64encode(os.urandom(32)).decode()
    assert not verify_org(org).ok  # the old key is not trusted any more
    settings.AUDIT_RETIRED_PUBLIC_KEYS = [old_public]
    events(org, 2)
    seal(org)
    blocks = list(Block.objects.filter(organization=org).order_by("sequence"))
    assert len({b.key_id for b in blocks}) == 2
    assert verify_org(org).ok
    assert standalone("digests", digests_file(org, tmp_path), tmp_path=tmp_path).returncode == 0


def test_the_standalone_verifier_refuses_bad_input(org, tmp_path):
    (tmp_path / "nothing.json").write_text("{not json")
    result = standalone("digests", str(tmp_path / "nothing.json"), tmp_path=tmp_path)
    assert result.returncode == 2 and "Cannot read the input" in result.stderr


# -- verifying fast, and in processes ---------------------------------------------------


def test_the_fast_read_confirms_events_of_every_shape_on_its_own(org, jira, admin):
    """Every block is confirmed by the fast read (audit.integrity_scan), none sent to the
    exact one, whatever characters, times and empty values its events hold."""
    base = datetime(2026, 11, 30, 14, 2, 3, tzinfo=UTC)
    odd = ["Zoë 🚀", 'a "quote" and a \\', "tab\tline\nbell\x07", "del\x7f", "\u2028", ""]
    for i, text in enumerate(odd):
        for micro in (0, 999_999, 450_000):  # stored on SQLite without a fraction, ...
            event_record(
                organization=org,
                action="group_member_added",
                actor=Actor.for_user(admin),
                occurred_at=base.replace(microsecond=micro) - timedelta(days=40 * i),
                product=jira if i % 2 else None,
                context=[{"type": "user", "id": str(i), "name": text, "email": "z@acme.test"}],
                container=[item("group", i, text or "ops")],
                details={"old": text, "new": "b", "count": i, "nested": {"z": [1, None]}},
                ip=("2001:DB8::1" if i % 2 else "192.0.2.7") if i < 4 else None,
                user_agent=text,
                location=Location(text, "Berlin", "Berlin"),
            )
    assert seal(org, block_events=5) == 18
    outcome = verify_org(org, processes=1)
    assert outcome.ok and outcome.events_checked == 18
    # Four blocks, or more on PostgreSQL when the horizon let the events in by turns.
    assert outcome.blocks == Block.objects.filter(organization=org).count() >= 4
    assert outcome.blocks_reread == 0


def test_a_block_the_fast_read_cannot_confirm_is_checked_the_exact_way(org, unguarded):
    made = sealed(org)
    sql("UPDATE audit_event SET hash = NULL WHERE id = %s", [made[4].pk])  # as before 0014
    outcome = verify_org(org, processes=1)
    assert outcome.ok and outcome.events_checked == 7
    assert outcome.blocks_reread == 1


@pytest.mark.parametrize("tampered", [0, 5, 9])
def test_verifying_in_processes_finds_what_one_process_finds(org, unguarded, tampered):
    """Ten blocks in runs of one or two per process: the tampered event in the first, a
    middle or the last run is named as one process names it."""
    made = sealed(org, n=10, block_events=1)
    serial = verify_org(org, processes=1)
    assert serial.ok and serial.events_checked == 10
    assert verify_org(org, processes=2) == serial
    sql("UPDATE audit_event SET message = 'nothing happened' WHERE id = %s", [made[tampered].pk])
    serial = verify_org(org, processes=1)
    assert not serial.ok and serial.block == tampered + 1 and serial.event == made[tampered].pk
    assert serial.events_checked == tampered
    assert verify_org(org, processes=2) == serial
    assert verify_org(org, processes=3) == serial


def test_verifying_in_processes_puts_a_bad_header_before_later_bad_events(org, unguarded):
    made = sealed(org, n=10, block_events=1)
    sql("UPDATE audit_event SET message = 'nothing happened' WHERE id = %s", [made[8].pk])
    sql(
        "UPDATE audit_block SET sealed_at = %s WHERE organization_id = %s AND sequence = 4",
        [datetime(2020, 1, 1, tzinfo=UTC), org.pk],
    )
    serial = verify_org(org, processes=1)
    assert serial.block == 4 and "does not match its hash" in serial.problem
    assert verify_org(org, processes=2) == serial
    sql("UPDATE audit_event SET message = 'nothing happened' WHERE id = %s", [made[1].pk])
    serial = verify_org(org, processes=1)
    assert serial.block == 2 and serial.event == made[1].pk
    assert verify_org(org, processes=2) == serial


# -- the daily verification --------------------------------------------------------------


def test_the_daily_verification_records_the_outcome_and_emails_admins_on_failure(
    org, admin, member, unguarded
):
    made = sealed(org)
    assert audit_log_verify_daily() == {org.pk: "ok"}
    verified = Event.objects.filter(organization=org, action__key="audit_log_verified").get()
    assert verified.message == (
        "System verified the audit log: 7 activities in 3 sealed blocks unchanged"
    )
    assert not mail.outbox
    sql("UPDATE audit_event SET ip = '198.51.100.7' WHERE id = %s", [made[0].pk])
    result = audit_log_verify_daily()
    assert "changed after it was recorded" in result[org.pk]
    failed = Event.objects.get(organization=org, action__key="audit_log_verification_failed")
    assert failed.message.startswith("System found the audit log altered: Event ")
    assert [m.to for m in mail.outbox] == [[admin.email]]
    assert "altered" in mail.outbox[0].body


def test_verify_and_record_keeps_the_latest_check(org):
    sealed(org)
    outcome, check = verify_and_record(org)
    assert check.ok and check.events == 7 and check.blocks == 3
    assert check.sealed_until == Block.objects.get(organization=org, sequence=3).sealed_at


def test_a_member_of_another_org_is_not_emailed(org, admin, other_org, unguarded):
    make_user("else@globex.test", other_org, "admin")
    made = sealed(org)
    sql("DELETE FROM audit_event WHERE id = %s", [made[0].pk])
    audit_log_verify_daily()
    assert [m.to for m in mail.outbox] == [[admin.email]]


# -- schedules ---------------------------------------------------------------------------


def test_the_migration_schedules_the_sealing_loop_and_the_daily_verification(db):
    from django_q.models import Schedule

    from audit.tasks import SEAL_FUNC, SEAL_SCHEDULE_NAME, VERIFY_FUNC, VERIFY_SCHEDULE_NAME

    seal_job = Schedule.objects.get(name=SEAL_SCHEDULE_NAME)
    assert (seal_job.func, seal_job.schedule_type, seal_job.minutes) == (SEAL_FUNC, "I", 1)
    verify_job = Schedule.objects.get(name=VERIFY_SCHEDULE_NAME)
    assert (verify_job.func, verify_job.schedule_type) == (VERIFY_FUNC, "D")
    assert verify_job.next_run.astimezone(UTC).hour == 3


@pytest.mark.skipif(POSTGRES, reason="one round may meet another suite's open transaction")
def test_a_round_of_the_sealing_loop_seals_every_organization(org, other_org):
    from audit.tasks import audit_log_seal_loop

    record(org), record(other_org)
    assert audit_log_seal_loop() == {"sealed": 2, "rounds": 1}  # Q_SYNC: one round
    assert set(Block.objects.values_list("organization_id", flat=True)) == {org.pk, other_org.pk}
    assert audit_log_seal_loop() == {"sealed": 0, "rounds": 1}


def test_without_a_signing_key_nothing_is_sealed_and_the_loop_says_why(org, settings):
    from audit.tasks import audit_log_seal_loop

    settings.AUDIT_SIGNING_KEY, settings.AUDIT_SIGNING_KEY_FILE = "", ""
    record(org)
    assert "No audit log signing key" in audit_log_seal_loop()["skipped"]
    with pytest.raises(CommandError, match="No audit log signing key"):
        call_command("audit_seal")
