"""The organization REST API, wire-compatible with the vendor's Organizations REST API
(DESIGN.md "REST API"): the same paths under /admin/v1/ and /admin/v2/, the same JSON.

Every call: `Authorization: Bearer <organization API key>` (orgs.services), the key's
organization only (any other id: 404), a rate limit per key (orgs.ratelimit) reported in
X-RateLimit-* headers on every response, and errors as
{"errors": [{"status", "code", "title", "detail"}]}, never HTML and never a traceback.
The filter is the page's and the export's (audit.filters.EventFilter); the event JSON is
the detail page's (audit.selectors.event_json). The schemas below are the OpenAPI
document (/api/openapi.json, rendered at /api/docs).
"""

import json
from datetime import UTC

import orjson
from django.conf import settings
from django.core import signing
from django.http import Http404, HttpRequest, JsonResponse, QueryDict
from ninja import Field, NinjaAPI, Query, Router, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer

from orgs.models import ApiKey, Organization
from orgs.ratelimit import rate_limit_hit
from orgs.services import api_key_authenticate

from .catalogue import CATEGORY_BY_KEY
from .filters import EventFilter, plan_actions
from .integrity import block_contents, block_header, blocks_after, event_proof
from .selectors import (
    EVENT_JSON_FIELDS,
    CursorError,
    cursor_make,
    cursor_read,
    event_get,
    event_json,
    event_position,
    event_row_json,
    event_slice,
    event_stream_slice,
    iso_utc,
    stream_cursor_make,
    stream_cursor_read,
)
from .services import client_ip

EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX = 100, 500
DIGESTS_LIMIT_DEFAULT, DIGESTS_LIMIT_MAX = 100, 500
DIGESTS_CURSOR_SALT = "audit.api.digests"
STREAM_LIMIT_DEFAULT, STREAM_LIMIT_MAX = 200, 500
API_CURSOR_SALT = "audit.api.events"


# -- errors ------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, code: str, title: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.title, self.detail = status, code, title, detail


def error_body(status: int, code: str, title: str, detail: str) -> dict:
    return {"errors": [{"status": str(status), "code": code, "title": title, "detail": detail}]}


class ErrorItem(Schema):
    status: str
    code: str
    title: str
    detail: str


class Errors(Schema):
    errors: list[ErrorItem]


ERRORS = {400: Errors, 401: Errors, 403: Errors, 404: Errors, 429: Errors}


# -- authentication and rate limit -------------------------------------------------------


class ApiKeyAuth(HttpBearer):
    """The organization API key; then the key's rate limit, whose state the response
    reports (auditlog_site.middleware.ApiResponseMiddleware adds the headers)."""

    openapi_scheme = "bearer"
    key_kind = "API key"

    def __call__(self, request: HttpRequest):
        header = request.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            raise ApiError(
                401,
                "unauthorized",
                "Unauthorized",
                f"Send Authorization: Bearer <{self.key_kind}>.",
            )
        return self.authenticate(request, header[7:].strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey:
        key = api_key_authenticate(secret=token, ip=client_ip(request))
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "Unauthorized",
                "The API key is unknown, revoked or expired.",
            )
        rate_limit_apply(request, f"api:{key.pk}", settings.API_RATE_LIMIT)
        return key


def rate_limit_apply(request: HttpRequest, counter: str, limit: int) -> None:
    """Counts the request against `counter` (limit per API_RATE_WINDOW); the response
    reports the state (request.rate_limit); past the limit, 429."""
    window = settings.API_RATE_WINDOW
    hit = rate_limit_hit(counter, limit, window)
    request.rate_limit = (limit, hit.remaining, hit.reset_epoch)
    if not hit.allowed:
        raise ApiError(
            429,
            "rate_limited",
            "Too many requests",
            f"At most {limit} requests every {window} seconds per key: retry after the "
            "time in Retry-After.",
        )


class JsonParser(Parser):
    """Request bodies read with orjson (an ingest body of 1,000 events, ~550 KB: 8 ms with
    json.loads, 4.5 with orjson); json.loads still reads what orjson refuses (NaN, a lone
    surrogate, an integer past 64 bits, UTF-16), so every body means what it did."""

    def parse_body(self, request: HttpRequest):
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return json.loads(request.body)


api = NinjaAPI(
    title="Organization audit log API",
    version="1",
    description="The vendor's Organizations REST API: organizations, audit log events, "
    "their actions and a polling stream. Authenticate with an organization API key "
    "(Security › Audit log › API keys) as `Authorization: Bearer <key>`.",
    auth=ApiKeyAuth(),
    urls_namespace="api",
    openapi_url="api/openapi.json",
    docs_url="api/docs",
    parser=JsonParser(),
)


@api.exception_handler(ApiError)
def _api_error(request, exc: ApiError):
    return api.create_response(
        request, error_body(exc.status, exc.code, exc.title, exc.detail), status=exc.status
    )


@api.exception_handler(NinjaValidationError)
def _validation_error(request, exc: NinjaValidationError):
    problems = []
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    detail = "; ".join(problems) or "The request's parameters are not valid."
    return api.create_response(
        request, error_body(400, "bad_request", "Bad request", detail), status=400
    )


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return api.create_response(
        request,
        error_body(401, "unauthorized", "Unauthorized", "Send Authorization: Bearer <API key>."),
        status=401,
    )


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    return api.create_response(
        request,
        error_body(exc.status_code, "error", "Error", str(exc)),
        status=exc.status_code,
    )


def _org(key: ApiKey, org_id: str) -> Organization:
    """The key's organization when `org_id` names it; 404 for any other id (another
    organization's key learns nothing about it)."""
    if org_id != str(key.organization_id):
        raise ApiError(404, "not_found", "Not found", f"No organization {org_id!r} for this key.")
    org = key.organization
    if not org.plan.audit_log:
        raise ApiError(
            403,
            "plan",
            "Forbidden",
            f"The {org.plan.name} plan does not include the organization audit log.",
        )
    return org


def json_response(body: dict) -> JsonResponse:
    """The body as it is: the schemas describe it (OpenAPI, and the schemathesis run in
    CI checks every response against them), but validating a page of 200 events against
    them again on every request took half the request's time."""
    return JsonResponse(body, json_dumps_params={"ensure_ascii": False})


def _absolute(request: HttpRequest, path: str, params: QueryDict | None = None) -> str:
    query = f"?{params.urlencode()}" if params else ""
    return request.build_absolute_uri(path) + query


# -- schemas -----------------------------------------------------------------------------


class SelfLink(Schema):
    self: str


class Pages(Schema):
    self: str
    prev: str | None = None
    next: str | None = None


class OrgAttributes(Schema):
    name: str


class Org(Schema):
    id: str
    type: str = "orgs"
    attributes: OrgAttributes
    relationships: dict
    links: SelfLink


class OrgList(Schema):
    data: list[Org]
    links: SelfLink


class OrgOne(Schema):
    data: Org


class Actor(Schema):
    id: str
    name: str
    email: str
    links: dict[str, str]


class Item(Schema):
    id: str
    type: str
    attributes: dict[str, str]
    links: dict[str, str]


class Location(Schema):
    ip: str
    geo: str
    countryName: str  # noqa: N815 - the vendor's field names
    regionName: str  # noqa: N815
    city: str


class EventAttributes(Schema):
    time: str
    action: str
    actor: Actor
    context: list[Item]
    container: list[Item]
    location: Location
    processedAt: str | None = None  # noqa: N815 - only in the events stream


class Message(Schema):
    content: str
    format: str


class Event(Schema):
    id: str
    type: str
    attributes: EventAttributes
    message: Message
    links: SelfLink


class EventMeta(Schema):
    next: str | None = None
    page_size: int


class EventList(Schema):
    data: list[Event]
    meta: EventMeta
    links: Pages


class EventOne(Schema):
    data: Event


class ActionAttributes(Schema):
    displayName: str  # noqa: N815
    groupDisplayName: str  # noqa: N815


class Action(Schema):
    id: str
    type: str = "event-actions"
    attributes: ActionAttributes


class ActionList(Schema):
    data: list[Action]


class Digest(Schema):
    """A block header, as `python -m audit.verify digests` reads it."""

    version: str
    organization: int
    sequence: int
    first: list[int | None]
    last: list[int | None]
    event_count: int
    total_events: int
    merkle_root: str
    previous_hash: str
    sealed_at: str
    key_id: str
    hash: str
    signature: str


class DigestItem(Schema):
    id: str
    type: str = "audit-digests"
    attributes: Digest


class DigestList(Schema):
    data: list[DigestItem]
    meta: EventMeta
    links: Pages


class DigestsQuery(Schema):
    cursor: str | None = Field(None, description="meta.next of the previous page")
    limit: int = Field(DIGESTS_LIMIT_DEFAULT, ge=1, le=DIGESTS_LIMIT_MAX)


class BlockEvent(Schema):
    id: int
    event: dict
    hash: str


class BlockContents(Schema):
    block: Digest
    leaves: list[str]
    events: list[BlockEvent]
    retained_before: str | None = None


class BlockOne(Schema):
    data: BlockContents


class ProofLeaf(Schema):
    event_hash: str
    data: str


class Proof(Schema):
    event_id: str
    event: dict
    leaf: ProofLeaf
    leaf_index: int
    audit_path: list[str]
    block: Digest


class ProofOne(Schema):
    data: Proof


class EventsQuery(Schema):
    cursor: str | None = Field(None, description="meta.next of the previous page")
    q: str | None = Field(
        None, description="An exact term: a user's name or email, a group or site name"
    )
    from_: str | None = Field(
        None, alias="from", description="Epoch milliseconds or ISO 8601; inclusive"
    )
    to: str | None = Field(None, description="Epoch milliseconds or ISO 8601")
    action: list[str] | None = Field(None, description="Action keys (event-actions), repeatable")
    actor: list[str] | None = Field(None, description="Actor ids or emails, repeatable")
    ip: list[str] | None = Field(None, description="IP addresses, repeatable")
    product: list[str] | None = Field(None, description="Product kinds (jira) or ids, repeatable")
    location: str | None = Field(
        None, description='A JSON array such as [{"city":"Berlin","countryName":"Germany"}]'
    )
    limit: int = Field(EVENTS_LIMIT_DEFAULT, ge=1, le=EVENTS_LIMIT_MAX)


class StreamQuery(Schema):
    cursor: str | None = Field(None, description="meta.next of the previous call")
    from_: str | None = Field(
        None, alias="from", description="Processed at or after (epoch ms or ISO 8601)"
    )
    to: str | None = Field(None, description="Processed before (epoch ms or ISO 8601)")
    limit: int = Field(STREAM_LIMIT_DEFAULT, ge=1, le=STREAM_LIMIT_MAX)
    sortOrder: str = Field("asc", pattern="^(asc|desc)$")  # noqa: N815


# -- endpoints ---------------------------------------------------------------------------


def _org_json(request: HttpRequest, org: Organization, version: str) -> dict:
    return {
        "id": str(org.pk),
        "type": "orgs",
        "attributes": {"name": org.name},
        "relationships": {},
        "links": {"self": _absolute(request, f"/admin/{version}/orgs/{org.pk}")},
    }


def _filter(request: HttpRequest, org: Organization) -> EventFilter:
    """The page's filter over the API's parameters: the whole retention window unless
    from / to narrow it; a bad parameter is a 400 naming it."""
    data = request.GET.copy()
    for name in ("cursor", "limit", "range", "sortOrder"):
        data.pop(name, None)
    return _valid_filter(data, org)


def _valid_filter(data, org: Organization) -> EventFilter:
    """EventFilter over `data` as a custom range in UTC, or a 400 naming each bad
    parameter."""
    data["range"] = "custom"
    filters = EventFilter(data, org=org, tz=UTC)
    if not filters.is_valid():
        detail = "; ".join(
            f"{name if name != '__all__' else 'request'}: {' '.join(errors)}"
            for name, errors in filters.errors.items()
        )
        raise ApiError(400, "bad_request", "Bad request", detail)
    return filters


def _events_cursor(org: Organization, cursor: str | None):
    if not cursor:
        return None
    try:
        position, _newer = cursor_read(cursor, scope=f"api:{org.pk}", salt=API_CURSOR_SALT)
    except CursorError as exc:
        raise ApiError(400, "bad_cursor", "Bad cursor", f"cursor: {exc}") from exc
    return position


_EVENT_VALUES = (*EVENT_JSON_FIELDS, "action__key")


def events_list(request: HttpRequest, org_id: str, query: EventsQuery, version: str) -> dict:
    org = _org(request.auth, org_id)
    filters = _filter(request, org)
    position = _events_cursor(org, query.cursor)
    # Rows, not model instances, and the links' scheme and host worked out once: a page
    # of 100 events cost twice the CPU the other way.
    rows = event_slice(filters, position, newer=False, limit=query.limit + 1, values=_EVENT_VALUES)
    events = rows[: query.limit]
    path = f"/admin/{version}/orgs/{org.pk}/events"
    host = request.build_absolute_uri("/")[:-1]
    body = {
        "data": [event_row_json(row, site_url=host) for row in events],
        "meta": {"page_size": len(events)},
        "links": {"self": _absolute(request, path, request.GET)},
    }
    if len(rows) > query.limit:
        cursor = cursor_make(
            event_position(events[-1]), newer=False, scope=f"api:{org.pk}", salt=API_CURSOR_SALT
        )
        body["meta"]["next"] = cursor
        params = request.GET.copy()
        params["cursor"] = cursor
        body["links"]["next"] = _absolute(request, path, params)
    if position is not None:
        params = request.GET.copy()
        params.pop("cursor", None)
        body["links"]["prev"] = _absolute(request, path, params)
    return body


def _version(request: HttpRequest) -> str:
    """ "v1" or "v2": links point back at the version the client called."""
    return request.path.split("/")[2]


def orgs(request):
    """The organization of the API key."""
    version = _version(request)
    return {
        "data": [_org_json(request, request.auth.organization, version)],
        "links": {"self": _absolute(request, f"/admin/{version}/orgs")},
    }


def org(request, org_id: str):
    """One organization: the key's own (any other id: 404)."""
    return {"data": _org_json(request, _org(request.auth, org_id), _version(request))}


def events(request, org_id: str, query: Query[EventsQuery]):
    """The organization's events, newest first, filtered as on the audit log page;
    pages by `meta.next` / `links.next` (absent on the last page)."""
    return json_response(events_list(request, org_id, query, _version(request)))


def _event(request, org_id: str, event_id: str):
    found_org = _org(request.auth, org_id)
    if not event_id.isdigit() or int(event_id) >= 2**63:
        raise ApiError(404, "not_found", "Not found", f"No event {event_id!r}.")
    try:
        return event_get(found_org, int(event_id))
    except Http404 as exc:
        raise ApiError(404, "not_found", "Not found", f"No event {event_id!r}.") from exc


def event(request, org_id: str, event_id: str):
    """One event."""
    return json_response({"data": event_json(_event(request, org_id, event_id), request)})


def event_actions(request, org_id: str):
    """The actions this organization's plan records (the page's Activity filter)."""
    found_org = _org(request.auth, org_id)
    return {
        "data": [
            {
                "id": activity.key,
                "type": "event-actions",
                "attributes": {
                    "displayName": activity.label,
                    "groupDisplayName": CATEGORY_BY_KEY[activity.category].label,
                },
            }
            for activity in plan_actions(found_org.plan)
        ]
    }


def events_stream(request, org_id: str, query: Query[StreamQuery]):
    """Every event in the order it was recorded (processedAt), for pollers: the cursor
    comes on the last page too; calling again with it returns only what was recorded
    since. Never skips or repeats an event, even when recording transactions commit
    out of order (README, "The events stream")."""
    return json_response(stream_page(request, org_id, query, _version(request)))


def audit_digests(request, org_id: str, query: Query[DigestsQuery]):
    """The organization's sealed blocks in chain order, each signed (Ed25519, the key at
    /.well-known/audit-log-signing-key): check them offline with `python -m audit.verify
    digests`. Pages by `meta.next` / `links.next` (absent on the last page)."""
    found_org = _org(request.auth, org_id)
    after = 0
    if query.cursor:
        try:
            payload = signing.loads(query.cursor, salt=DIGESTS_CURSOR_SALT)
            if payload["o"] != found_org.pk:
                raise ValueError("another organization's cursor")
            after = int(payload["s"])
        except (signing.BadSignature, ValueError, TypeError, KeyError) as exc:
            raise ApiError(
                400, "bad_cursor", "Bad cursor", "cursor: That cursor is not valid."
            ) from exc
    blocks = blocks_after(found_org, after, query.limit + 1)
    page = blocks[: query.limit]
    path = f"/admin/{_version(request)}/orgs/{found_org.pk}/audit-digests"
    body = {
        "data": [
            {"id": str(b.sequence), "type": "audit-digests", "attributes": block_header(b)}
            for b in page
        ],
        "meta": {"page_size": len(page)},
        "links": {"self": _absolute(request, path, request.GET)},
    }
    if len(blocks) > query.limit:
        cursor = signing.dumps(
            {"o": found_org.pk, "s": page[-1].sequence}, salt=DIGESTS_CURSOR_SALT
        )
        params = request.GET.copy()
        params["cursor"] = cursor
        body["meta"]["next"] = cursor
        body["links"]["next"] = _absolute(request, path, params)
    return json_response(body)


def audit_digest(request, org_id: str, sequence: str):
    """One sealed block with its leaves and every event now stored in its span, in
    recording order: `python -m audit.verify block` checks offline that they are the
    events it sealed (none changed, deleted, inserted or reordered)."""
    found_org = _org(request.auth, org_id)
    known = sequence.isdigit() and int(sequence) < 2**63
    contents = block_contents(found_org, int(sequence)) if known else None
    if contents is None:
        raise ApiError(404, "not_found", "Not found", f"No block {sequence!r}.")
    return json_response({"data": contents})


def event_proof_get(request, org_id: str, event_id: str):
    """The inclusion proof of one event: its canonical fields, its leaf, the audit path
    and the signed block whose Merkle root it leads to (`python -m audit.verify proof`).
    404 until the event is sealed (every few seconds)."""
    found = _event(request, org_id, event_id)
    proof, why = event_proof(request.auth.organization, found)
    if proof is None:
        raise ApiError(404, "not_sealed", "Not sealed", why)
    return json_response({"data": proof})


ENDPOINTS = [
    ("/orgs", orgs, OrgList),
    ("/orgs/{org_id}", org, OrgOne),
    ("/orgs/{org_id}/events", events, EventList),
    ("/orgs/{org_id}/events/{event_id}", event, EventOne),
    ("/orgs/{org_id}/event-actions", event_actions, ActionList),
    ("/orgs/{org_id}/events-stream", events_stream, EventList),
    ("/orgs/{org_id}/audit-digests", audit_digests, DigestList),
    ("/orgs/{org_id}/audit-digests/{sequence}", audit_digest, BlockOne),
    ("/orgs/{org_id}/events/{event_id}/proof", event_proof_get, ProofOne),
]


def _router(version: str) -> Router:
    """The same endpoints for /admin/v1/ and /admin/v2/ (clients call either)."""
    router = Router(tags=[version])
    for path, view, schema in ENDPOINTS:
        router.add_api_operation(
            path,
            ["GET"],
            view,
            response={200: schema, **ERRORS},
            operation_id=f"{version}_{view.__name__}",
            exclude_none=True,
        )
    return router


def stream_page(request: HttpRequest, org_id: str, query: StreamQuery, version: str) -> dict:
    org = _org(request.auth, org_id)
    desc = query.sortOrder == "desc"
    after = None
    if query.cursor:
        try:
            after = stream_cursor_read(query.cursor, org=org, desc=desc)
        except CursorError as exc:
            raise ApiError(400, "bad_cursor", "Bad cursor", f"cursor: {exc}") from exc
    bounds = _stream_bounds(request, org)
    rows, last = event_stream_slice(org, after, desc=desc, limit=query.limit, **bounds)
    path = f"/admin/{version}/orgs/{org.pk}/events-stream"
    cursor = stream_cursor_make(last or after, org=org, desc=desc)
    params = request.GET.copy()
    params["cursor"] = cursor
    data = []
    for event in rows:
        body = event_json(event, request)
        body["attributes"]["processedAt"] = iso_utc(event.recorded_at)
        data.append(body)
    return {
        "data": data,
        "meta": {"next": cursor, "page_size": len(data)},
        "links": {
            "self": _absolute(request, path, request.GET),
            "next": _absolute(request, path, params),
        },
    }


def _stream_bounds(request: HttpRequest, org: Organization) -> dict:
    """from / to on the processing time, parsed as the filter parses them."""
    data = {name: request.GET[name] for name in ("from", "to") if request.GET.get(name)}
    if not data:
        return {"since": None, "until": None}
    window = _valid_filter(data, org).window
    return {"since": window.start if "from" in data else None, "until": window.end}


api.add_router("admin/v1/", _router("v1"))
api.add_router("admin/v2/", _router("v2"))
