"""Paging the events endpoint by meta.next and by links.next: no repeats, no gaps."""

from datetime import timedelta
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.utils import timezone

from .conftest import org_events, record


@pytest.fixture
def many(org):
    """23 events, several sharing one timestamp (the keyset's id tie-break)."""
    now = timezone.now()
    tied = now - timedelta(hours=2)
    for n in range(23):
        record(org, occurred_at=tied if 8 <= n < 16 else now - timedelta(minutes=10 * n + 1))


def follow(api, first_url: str, by: str) -> list[dict]:
    """Every page from `first_url`, by meta.next (re-sending the params) or links.next."""
    pages, url = [], first_url
    first_query = urlsplit(first_url).query
    while url:
        split = urlsplit(url)
        body = api.json(f"{split.path}?{split.query}")
        pages.append(body)
        assert len(pages) < 50
        if by == "links":
            url = body["links"].get("next")
        elif cursor := body["meta"].get("next"):
            url = f"{split.path}?{first_query}&{urlencode({'cursor': cursor})}"
        else:
            url = None
    return pages


@pytest.mark.parametrize("by", ["meta", "links"])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_paging_gives_every_event_once_in_order(api, org, many, by, version):
    api.json("/admin/v1/orgs")  # the key's first use is itself an event: record it now
    expected = org_events(org)
    assert len(expected) == 25  # 23 + the key's creation + its first use
    pages = follow(api, f"http://testserver/admin/{version}/orgs/{org.pk}/events?limit=7", by)
    assert [len(p["data"]) for p in pages] == [7, 7, 7, 4]
    ids = [int(e["id"]) for p in pages for e in p["data"]]
    assert ids == expected  # no repeat, no gap, newest first
    for page in pages[:-1]:
        assert page["meta"]["page_size"] == 7
        cursor = page["meta"]["next"]
        query = parse_qs(urlsplit(page["links"]["next"]).query)
        assert query["cursor"] == [cursor]
        assert query["limit"] == ["7"]
    last = pages[-1]
    assert "next" not in last["meta"] and "next" not in last["links"]
    assert last["meta"]["page_size"] == 4
    assert "prev" not in pages[0]["links"]
    for page in pages[1:]:
        assert "cursor" not in parse_qs(urlsplit(page["links"]["prev"]).query)


def test_the_links_keep_the_filters(api, org, many):
    body = api.json(f"/admin/v1/orgs/{org.pk}/events", {"limit": 3, "action": "group_created"})
    query = parse_qs(urlsplit(body["links"]["next"]).query)
    assert query["action"] == ["group_created"] and query["limit"] == ["3"]
    assert "cursor" not in parse_qs(urlsplit(body["links"]["self"]).query)


def test_an_exact_fit_has_no_next_page(api, org, many):
    api.json("/admin/v1/orgs")
    body = api.json(f"/admin/v1/orgs/{org.pk}/events", {"limit": 25})
    assert len(body["data"]) == 25
    assert "next" not in body["meta"] and "next" not in body["links"]


def test_v1_and_v2_page_alike(api, org, many):
    api.json("/admin/v1/orgs")
    v1 = follow(api, f"http://testserver/admin/v1/orgs/{org.pk}/events?limit=6", "meta")
    v2 = follow(api, f"http://testserver/admin/v2/orgs/{org.pk}/events?limit=6", "meta")
    assert [p["data"] for p in v1] == [p["data"] for p in v2]
    assert [p["meta"]["page_size"] for p in v1] == [p["meta"]["page_size"] for p in v2]


def test_a_cursor_from_v1_works_on_v2(api, org, many):
    api.json("/admin/v1/orgs")
    first = api.json(f"/admin/v1/orgs/{org.pk}/events", {"limit": 5})
    from_v1 = api.json(
        f"/admin/v1/orgs/{org.pk}/events", {"limit": 5, "cursor": first["meta"]["next"]}
    )
    from_v2 = api.json(
        f"/admin/v2/orgs/{org.pk}/events", {"limit": 5, "cursor": first["meta"]["next"]}
    )
    assert from_v1["data"] == from_v2["data"]


def test_the_default_page_is_100(api, org):
    for n in range(105):
        record(org, ago=timedelta(minutes=n + 1))
    body = api.json(f"/admin/v1/orgs/{org.pk}/events")
    assert body["meta"]["page_size"] == 100 and body["meta"]["next"]
