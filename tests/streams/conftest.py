"""Real receivers: a threaded HTTP server in the test process that records what it is
sent and answers what the test tells it to."""

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.db import connection
from django.db.models import Max

from audit.delivery import signature_verify
from audit.models import Event, Stream
from audit.streams import (
    IDLE,
    MOVED,
    SENT,
    Author,
    leases_take,
    stream_create,
    stream_deliver_burst,
)


@dataclass
class Request:
    path: str
    headers: dict
    body: bytes
    status: int

    @property
    def events(self) -> list[dict]:
        return json.loads(self.body)["data"]


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # answered in turn, then `status`
    status: int = 204
    on_request: object = None  # called with the Request before it is answered

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"

    def accepted_ids(self, own: bool = False) -> list[int]:
        """Ids of the events in accepted batches, in order; without the streams' own
        events (audit_log_webhook_*: "added stream" is the first a stream sends)."""
        return [
            int(e["id"])
            for r in self.requests
            if 200 <= r.status < 300
            for e in r.events
            if own or not e["attributes"]["action"].startswith("audit_log_webhook")
        ]

    def all_ids(self) -> list[int]:
        return [int(e["id"]) for r in self.requests for e in r.events]


@pytest.fixture
def receiver():
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            rec = state["receiver"]
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = rec.statuses.pop(0) if rec.statuses else rec.status
            request = Request(self.path, dict(self.headers), body, status)
            if rec.on_request is not None:
                rec.on_request(request)
            rec.requests.append(request)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["receiver"] = rec = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


def make_stream(org, url: str, **fields) -> tuple[Stream, str]:
    return stream_create(
        organization=org, name=fields.pop("name", "SIEM"), url=url, by=Author(), **fields
    )


def settled() -> None:
    """PostgreSQL: wait until every committed event is below the stream horizon."""
    if connection.vendor != "postgresql":
        return
    from audit.selectors import stream_horizon

    newest = Event.objects.aggregate(m=Max("txid"))["m"] or 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if stream_horizon() > newest:
            return
        time.sleep(0.1)
    pytest.skip("another transaction in this database holds the stream horizon back")


def deliver(stream: Stream, *, rounds: int = 50) -> str:
    """Runs delivery of `stream` in this process, as the loop would, until it has
    nothing more to do (idle, waiting for a retry, paused); returns the last outcome."""
    settled()
    token = uuid.uuid4().hex
    outcome = IDLE
    for _ in range(rounds):
        if stream.pk not in leases_take(token):
            return "not leased"
        outcome = stream_deliver_burst(stream.pk, token)
        if outcome not in (SENT, MOVED):
            break
    Stream.objects.filter(lease_owner=token).update(lease_owner="", lease_until=None)
    return outcome


def verified(request: Request, secret: str) -> bool:
    return signature_verify(request.body, request.headers["X-Audit-Signature"], secret)
