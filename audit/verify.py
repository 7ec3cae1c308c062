"""Tamper evidence, the half that needs no server: the canonical serialization and
hash of an event, the Merkle tree of a block (RFC 6962), a block's header hash and
Ed25519 signature, and the checks of a digest chain, an inclusion proof and an export
manifest. Standard library and `cryptography` only, so that anyone holding the public
key can run it away from the server:

    python -m audit.verify digests digests.json --key audit-log-signing-key.json
    python -m audit.verify proof proof.json --key KEY
    python -m audit.verify block block.json --key KEY
    python -m audit.verify export audit-log.csv audit-log.manifest.json --key KEY

KEY is the JSON of /.well-known/audit-log-signing-key saved to a file, a PEM public key
file, or a public key as base64 (repeat --key for retired keys). Exit status 0 when
everything checks, 1 (naming the first problem) when not, 2 on bad input.

The server (audit.integrity) uses the same functions, so what it seals is exactly
what this checks. Nothing here may import Django.
"""

import argparse
import base64
import csv
import hashlib
import json
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

EVENT_VERSION = "ev1"
BLOCK_VERSION = "blk1"
MANIFEST_VERSION = "man1"
ZERO_HASH = "0" * 64
LEAF_SIZE = 40  # 8 bytes of occurred_at (microseconds since 1970, big-endian) + the event hash
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEAF_TIME = struct.Struct(">q")


class VerifyError(Exception):
    """What broke, in words an admin can act on."""


class EventError(VerifyError):
    """What broke, about one event (`event_id`, when one can be named)."""

    def __init__(self, message: str, event_id: int | None):
        super().__init__(message)
        self.event_id = event_id


# -- events ------------------------------------------------------------------------------


def canonical_json(value: object) -> str:
    """The one JSON text of a value: sorted keys, no spaces, ASCII only. Context,
    container and details are hashed as this text, whatever the database gives back
    (PostgreSQL's jsonb reorders keys and adds spaces)."""
    return _CANONICAL(value)


# Encoders built once: json.dumps with options builds a new encoder on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode
_ARRAY = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def canonical_time(moment: datetime) -> str:
    """UTC with microseconds, always all six digits: 2026-11-30T14:02:03.000000Z."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # less "+00:00"


def time_micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH

# The stored fields an event's hash covers, in this order (version EVENT_VERSION). Not
# the id (handed out by the database, bound by the event's place in its block instead),
# the transaction id, nor the hash itself.
EVENT_FIELDS = (
    "organization_id",
    "occurred_at",
    "recorded_at",
    "action",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "product_id",
    "product_kind",
    "site_name",
    "context",
    "container",
    "content",
    "details",
    "ip",
    "user_agent",
    "country",
    "region",
    "city",
    "message",
)


def canonical_array(items: list) -> str:
    """A list as compact JSON text, ASCII only (event_canonical's, with the version)."""
    return _ARRAY(items)


def event_canonical(values: Sequence) -> bytes:
    """The canonical serialization of an event: EVENT_FIELDS' values in order, times as
    canonical_time text, context / container / details as canonical_json text, in a
    JSON array behind the version. `values` are already in that form."""
    return _ARRAY([EVENT_VERSION, *values]).encode("ascii")


def event_hash(values: Sequence) -> bytes:
    return hashlib.sha256(event_canonical(values)).digest()


def event_values(event: Mapping) -> list:
    """EVENT_FIELDS' values in canonical form from an event given as Python values
    (datetimes, JSON as Python objects), e.g. the `event` of an inclusion proof."""
    values = []
    for field in EVENT_FIELDS:
        value = event[field]
        if field in ("occurred_at", "recorded_at"):
            value = value if isinstance(value, str) else canonical_time(value)
        elif field in ("context", "container", "details"):
            value = canonical_json(value)
        values.append(value)
    return values


# -- Merkle tree (RFC 6962 / RFC 9162) ----------------------------------------------------


def leaf_data(occurred_micros: int, hash_: bytes) -> bytes:
    return _LEAF_TIME.pack(occurred_micros) + hash_


def leaves_split(blob: bytes) -> list[bytes]:
    return [blob[i : i + LEAF_SIZE] for i in range(0, len(blob), LEAF_SIZE)]


def leaf_time(leaf: bytes) -> datetime:
    return _EPOCH + _MICROSECOND * _LEAF_TIME.unpack(leaf[:8])[0]


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962's Merkle Tree Hash of the leaf data `leaves`. Built level by level, an
    unpaired last node moving up as it is: the same tree as the RFC's split at the
    largest power of two below n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    level = _leaf_hashes(leaves)
    while len(level) > 1:
        level = _level_up(level)
    return level[0]


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion proof of leaf `index`: its siblings from the bottom up."""
    level = _leaf_hashes(leaves)
    path = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        level, index = _level_up(level), index // 2
    return path


def _leaf_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    sha256 = hashlib.sha256
    return [sha256(b"\x00" + data).digest() for data in leaves]


def _level_up(level: list[bytes]) -> list[bytes]:
    """The level above `level`: its nodes paired (the tree's cost is all here, so
    pairs come from one iterator rather than by index)."""
    sha256, odd = hashlib.sha256, len(level) % 2
    pairs = iter(level[:-1] if odd else level)  # zip(pairs, pairs): (0, 1), (2, 3), ...
    above = [
        sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)
    ]
    if odd:
        above.append(level[-1])
    return above


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """RFC 9162 section 2.1.3.2: the root that leaf data `leaf` at `index` of a tree of
    `size` leaves and its audit `path` lead to."""
    if not 0 <= index < size:
        raise VerifyError(f"Leaf index {index} is outside a block of {size} events.")
    fn, sn, node = index, size - 1, leaf_hash(leaf)
    for sibling in path:
        if sn == 0:
            raise VerifyError("The audit path is longer than the tree is deep.")
        if fn & 1 or fn == sn:
            node = _node(sibling, node)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            node = _node(node, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerifyError("The audit path is shorter than the tree is deep.")
    return node


# -- blocks and keys ---------------------------------------------------------------------

HEADER_FIELDS = (
    "version",
    "organization",
    "sequence",
    "first",
    "last",
    "event_count",
    "total_events",
    "merkle_root",
    "previous_hash",
    "sealed_at",
    "key_id",
)


def block_hash(header: Mapping) -> str:
    """The hex SHA-256 of a block header's canonical JSON (HEADER_FIELDS only)."""
    body = canonical_json({name: header[name] for name in HEADER_FIELDS})
    return hashlib.sha256(body.encode("ascii")).hexdigest()


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def public_key_load(text: str):
    """An Ed25519 public key from PEM text or base64 of its 32 raw bytes."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise VerifyError(f"Not an Ed25519 public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerifyError("Not an Ed25519 public key.")
    return key


def public_raw(key) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def keys_by_id(keys: Iterable) -> dict:
    return {key_id(public_raw(key)): key for key in keys}


def signature_check(keys: Mapping, kid: str, signature_b64: str, message: bytes, what: str) -> None:
    from cryptography.exceptions import InvalidSignature

    key = keys.get(kid)
    if key is None:
        raise VerifyError(f"{what} is signed with key {kid}, which is not a key you trust.")
    try:
        key.verify(base64.b64decode(signature_b64), message)
    except (InvalidSignature, ValueError) as exc:
        raise VerifyError(f"{what} has a signature that does not match key {kid}.") from exc


def block_check(block: Mapping, keys: Mapping, previous: Mapping | None) -> None:
    """One block header: its hash, its signature and its link to `previous` (None: it
    must be the first)."""
    where = f"Block {block.get('sequence')}"
    if block.get("version") != BLOCK_VERSION:
        raise VerifyError(f"{where} has an unknown version {block.get('version')!r}.")
    if block_hash(block) != block["hash"]:
        raise VerifyError(f"{where} was changed: its header does not match its hash.")
    signature_check(keys, block["key_id"], block["signature"], bytes.fromhex(block["hash"]), where)
    if previous is None:
        if block["sequence"] != 1 or block["previous_hash"] != ZERO_HASH:
            raise VerifyError(f"{where} is not the first block, but nothing comes before it.")
        if block["total_events"] != block["event_count"]:
            raise VerifyError(f"{where}'s running total of events is wrong.")
        return
    if block["organization"] != previous["organization"]:
        raise VerifyError(f"{where} belongs to another organization.")
    if block["sequence"] != previous["sequence"] + 1:
        raise VerifyError(
            f"Block {previous['sequence'] + 1} is missing: block {previous['sequence']} is "
            f"followed by block {block['sequence']}."
        )
    if block["previous_hash"] != previous["hash"]:
        raise VerifyError(f"{where} does not chain to block {previous['sequence']}.")
    if block["total_events"] != previous["total_events"] + block["event_count"]:
        raise VerifyError(f"{where}'s running total of events is wrong.")


def chain_check(blocks: Sequence[Mapping], keys: Mapping, previous: Mapping | None = None) -> None:
    """Blocks in sequence order, each checked against the one before."""
    for block in blocks:
        block_check(block, keys, previous)
        previous = block


def block_events_check(
    block: Mapping,
    leaves: Sequence[bytes],
    events: Iterable[tuple[int, bytes, bytes]],
    retained_before: int | None,
) -> int:
    """The events stored in a block's span, in recording order, against the leaves it
    sealed: each given as (event id, leaf data derived from its fields, the hash
    recorded with it or b""). A sealed event may be absent only when it occurred before
    `retained_before` (microseconds; retention removed it). Returns how many events
    were checked; raises EventError naming the first bad one."""
    seq = block["sequence"]
    if len(leaves) != block["event_count"] or merkle_root(leaves).hex() != block["merkle_root"]:
        raise VerifyError(f"Block {seq}'s stored leaves do not match its Merkle root.")
    where: dict[bytes, list[int]] = {}
    for index, leaf in enumerate(leaves):
        where.setdefault(leaf, []).append(index)
    i = checked = 0
    for event_id, leaf, recorded in events:
        checked += 1
        if recorded and recorded != leaf[8:]:
            raise EventError(
                f"Event {event_id} in block {seq} was changed after it was recorded: its "
                "fields no longer match the hash recorded with it.",
                event_id,
            )
        if i < len(leaves) and leaves[i] == leaf:
            i += 1
            continue
        found = where.get(leaf, [])
        later = next((at for at in found if at >= i), None)
        if later is None:
            raise EventError(
                f"Event {event_id} is not what block {seq} sealed: it was changed, moved, or "
                "inserted into the sealed span.",
                event_id,
            )
        _absent_check(leaves[i:later], retained_before, seq, f"before event {event_id}", event_id)
        i = later + 1
    _absent_check(leaves[i:], retained_before, seq, "at its end", None)
    return checked


def _absent_check(
    missing: Sequence[bytes], retained_before: int | None, seq: int, where: str, event_id
) -> None:
    for leaf in missing:
        if retained_before is None or _LEAF_TIME.unpack(leaf[:8])[0] >= retained_before:
            raise EventError(
                f"{len(missing)} event(s) sealed in block {seq} {where} are missing or out of "
                f"order (one occurred {leaf_time(leaf):%d %b %Y %H:%M:%S} UTC): "
                "deleted, moved or swapped, not removed by retention.",
                event_id,
            )


def event_leaf(event: Mapping) -> tuple[bytes, bytes]:
    """(leaf data, event hash) of an event given as canonical fields (a proof's or a
    block's `event`)."""
    digest = event_hash(event_values(event))
    occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
    return leaf_data(time_micros(occurred), digest), digest


def block_contents_check(contents: Mapping, keys: Mapping) -> tuple[Mapping, int]:
    """A block with every event stored in its span (GET .../audit-digests/{sequence}):
    the block is signed, its leaves lead to its root, its events match its leaves."""
    block = contents["block"]
    block_check(block, keys, None if block["sequence"] == 1 else _unchecked_link(block))
    leaves = [bytes.fromhex(h) for h in contents["leaves"]]
    retained = contents.get("retained_before")
    before = (
        time_micros(datetime.fromisoformat(retained.replace("Z", "+00:00"))) if retained else None
    )
    events = (
        (e["id"], event_leaf(e["event"])[0], bytes.fromhex(e["hash"] or ""))
        for e in contents["events"]
    )
    return block, block_events_check(block, leaves, events, before)


def proof_check(proof: Mapping, keys: Mapping) -> Mapping:
    """An inclusion proof (GET .../events/{id}/proof): the event's fields hash to its
    leaf, the leaf and audit path lead to the block's root, the block is signed.
    Returns the block."""
    block = proof["block"]
    block_check(block, keys, None if block["sequence"] == 1 else _unchecked_link(block))
    leaf, digest = event_leaf(proof["event"])
    if digest.hex() != proof["leaf"]["event_hash"]:
        raise VerifyError(f"Event {proof['event_id']}'s fields do not match its hash.")
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    root = root_from_path(leaf, proof["leaf_index"], block["event_count"], path)
    if root.hex() != block["merkle_root"]:
        raise VerifyError(
            f"Event {proof['event_id']} is not in block {block['sequence']}: "
            "its audit path does not lead to the block's Merkle root."
        )
    return block


def _unchecked_link(block: Mapping) -> Mapping:
    """A stand-in for the block before `block` when only `block` is at hand: its link
    is checked by the digest chain, not here."""
    return {
        "organization": block["organization"],
        "sequence": block["sequence"] - 1,
        "hash": block["previous_hash"],
        "total_events": block["total_events"] - block["event_count"],
    }


def manifest_body(manifest: Mapping) -> bytes:
    return canonical_json({k: v for k, v in manifest.items() if k != "signature"}).encode("ascii")


def export_check(csv_path: Path, manifest: Mapping, keys: Mapping) -> int:
    """An exported CSV against its signed manifest; returns the number of rows."""
    if manifest.get("version") != MANIFEST_VERSION:
        raise VerifyError(f"Unknown manifest version {manifest.get('version')!r}.")
    signature_check(
        keys, manifest["key_id"], manifest["signature"], manifest_body(manifest), "The manifest"
    )
    digest = hashlib.sha256()
    with open(csv_path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != manifest["sha256"]:
        raise VerifyError(
            f"{csv_path.name} is not the exported file: its SHA-256 differs from the manifest's."
        )
    with open(csv_path, newline="", encoding="utf-8") as file:
        rows = sum(1 for _ in csv.reader(file)) - 1
    if rows != manifest["rows"]:
        raise VerifyError(f"{csv_path.name} has {rows} rows; the manifest says {manifest['rows']}.")
    return rows


# -- command line ------------------------------------------------------------------------


def _keys_read(values: Sequence[str]) -> dict:
    keys = []
    for value in values:
        path = Path(value)
        text = path.read_text() if len(value) < 4096 and path.is_file() else value
        if text.lstrip().startswith("{"):  # /.well-known/audit-log-signing-key
            keys += [public_key_load(k["publicKey"]) for k in json.loads(text)["keys"]]
        else:
            keys.append(public_key_load(text))
    return keys_by_id(keys)


def _digests_read(path: Path) -> list[dict]:
    """Blocks from a file: one digests page ({"data": [...]}), a list of pages or of
    blocks, or JSON lines of either."""
    text = path.read_text()
    try:
        documents = [json.loads(text)]
    except json.JSONDecodeError:
        documents = [json.loads(line) for line in text.splitlines() if line.strip()]
    blocks: list[dict] = []
    for document in documents:
        items = document if isinstance(document, list) else [document]
        for item in items:
            if "data" in item:
                blocks += [b.get("attributes", b) for b in item["data"]]
            else:
                blocks.append(item.get("attributes", item))
    return sorted(blocks, key=lambda b: b["sequence"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audit.verify",
        description="Check audit log digests, an inclusion proof or an export offline.",
    )
    parser.add_argument("--key", action="append", required=True, help="public key(s)")
    sub = parser.add_subparsers(dest="what", required=True)
    digests = sub.add_parser("digests", help="a chain of block digests (GET .../audit-digests)")
    digests.add_argument("file", type=Path)
    proof = sub.add_parser("proof", help="an inclusion proof (GET .../events/{id}/proof)")
    proof.add_argument("file", type=Path)
    block = sub.add_parser("block", help="a block and its events (GET .../audit-digests/{n})")
    block.add_argument("file", type=Path)
    export = sub.add_parser("export", help="an exported CSV and its manifest")
    export.add_argument("csv", type=Path)
    export.add_argument("manifest", type=Path)
    args = parser.parse_args(argv)
    try:
        keys = _keys_read(args.key)
        if args.what == "digests":
            blocks = _digests_read(args.file)
            if not blocks:
                raise VerifyError("The file holds no blocks.")
            first = blocks[0]
            chain_check(blocks, keys, None if first["sequence"] == 1 else _unchecked_link(first))
            print(
                f"OK: blocks {first['sequence']} to {blocks[-1]['sequence']} chain and are "
                f"signed; {blocks[-1]['total_events']:,} events sealed up to "
                f"{blocks[-1]['sealed_at']}."
            )
        elif args.what == "proof":
            document = json.loads(args.file.read_text())
            document = document.get("data", document)
            block = proof_check(document, keys)
            print(
                f"OK: event {document['event_id']} is leaf {document['leaf_index']} of block "
                f"{block['sequence']} (sealed {block['sealed_at']}), signed by {block['key_id']}."
            )
        elif args.what == "block":
            document = json.loads(args.file.read_text())
            block, checked = block_contents_check(document.get("data", document), keys)
            retained = document.get("data", document).get("retained_before")
            print(
                f"OK: block {block['sequence']} is signed and its {checked:,} stored events "
                f"are the {block['event_count']:,} it sealed"
                + (f", less those before {retained} removed by retention." if retained else ".")
            )
        else:
            manifest = json.loads(args.manifest.read_text())
            rows = export_check(args.csv, manifest, keys)
            print(
                f"OK: {args.csv.name} is the export of {manifest['exported_at']}: {rows:,} rows, "
                f"SHA-256 {manifest['sha256']}, signed by {manifest['key_id']}."
            )
    except VerifyError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"Cannot read the input: {exc!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
