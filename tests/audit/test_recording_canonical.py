"""The recorder writes an event's JSON texts and hashed bytes with orjson where they are
json's to the byte (audit.recording._json_text, _event_digest): they must stay what
audit.verify, standard library only, computes from the stored event."""

import pytest

from audit.models import Event
from audit.recording import _event_digest, _json_text
from audit.verify import canonical_json, event_hash

TEXTS = ["", "plain", 'quote " and \\ backslash', "\x00\x01\x1f\n\t\r\b\f", "\x7f", "é", "😀"]


@pytest.mark.parametrize("text", TEXTS)
def test_item_texts_are_the_canonical_json(text):
    items = [{"type": "user", "name": text, "id": "7"}, {"type": "group", "name": "g"}]
    assert _json_text(items) == canonical_json(items)


@pytest.mark.parametrize(
    "items",
    [[{"type": "page", "size": 1e16}], [{"type": "page", "id": 2**70}], [{1: "a"}], [{"a": None}]],
)
def test_other_values_take_json(items):
    assert _json_text(items) == canonical_json(items)


@pytest.mark.parametrize("text", [*TEXTS, 2**70, 1e16, True, None])
def test_the_hashed_bytes_are_the_canonical_ones(text):
    values = [1, "2026-11-30T09:00:00.000000Z", Event.ActorType.USER, text, 7, None, "[]"]
    assert _event_digest(values) == event_hash(values)
