"""The HTTP side of streaming: where a destination may be, how a batch is signed, and
one POST to the address that was checked.

SSRF: a destination's host is resolved and every address it resolves to must be
public (not loopback, private, link-local, multicast, reserved or unspecified) unless
STREAM_ALLOW_PRIVATE_HOSTS is on. The connection is then made to that checked address
(the Host header and TLS name stay the host's), so DNS cannot answer differently
between the check and the connection; redirects are not followed. The check runs when
a stream is saved and again before every delivery burst."""

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from django.conf import settings

USER_AGENT = "AuditLog-Streams/1.0 (+https://github.com/auditlog; organization audit log)"
SIGNATURE_HEADER = "X-Audit-Signature"
CONNECT_TIMEOUT, TOTAL_TIMEOUT = 5.0, 10.0
RESPONSE_READ_LIMIT = 64 * 1024
_REFUSED_KINDS = ("loopback", "private", "link_local", "multicast", "reserved", "unspecified")


class DestinationRefused(ValueError):
    """A destination URL that may not be sent to; the message says why."""


def address_refusal(address: str) -> str:
    """What kind of non-public address `address` is ("loopback", ...), or ""."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in _REFUSED_KINDS:
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return "" if ip.is_global else "non-public"


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    address: str  # the checked address the connection goes to
    target: str  # path and query

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def destination_check(url: str) -> Destination:
    """The destination `url` names, resolved and checked; DestinationRefused if not."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("Enter an http:// or https:// URL.")
    if settings.STREAM_REQUIRE_HTTPS and parts.scheme != "https":
        raise DestinationRefused("The destination must use https://.")
    if parts.username or parts.password:
        raise DestinationRefused(
            "Put credentials in the Authorization header field, not in the URL."
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise DestinationRefused("The URL's port is not a number from 1 to 65535.") from exc
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"{host} cannot be resolved.") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not settings.STREAM_ALLOW_PRIVATE_HOSTS:
        for address in addresses:
            if kind := address_refusal(address):
                raise DestinationRefused(
                    f"{host} resolves to {address}, a {kind} address: destinations must be public."
                )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, host, port, addresses[0], target)


def signature_header(body: bytes, secrets: list[str], now: float | None = None) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">`, one v1 per secret (two during
    a rotation's grace period)."""
    stamp = str(int(now if now is not None else time.time()))
    signed = stamp.encode() + b"." + body
    values = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets if s]
    return ",".join([f"t={stamp}"] + [f"v1={v}" for v in values])


def signature_verify(body: bytes, header: str, secret: str, tolerance: int = 300) -> bool:
    """What a receiver does (README, "Streaming"): the timestamp is recent and one v1
    is the HMAC of "t.body" with its secret."""
    pairs = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [v for k, v in pairs if k == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    if abs(time.time() - int(stamps[0])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256)
    return any(hmac.compare_digest(expected.hexdigest(), v) for k, v in pairs if k == "v1")


@dataclass
class Response:
    status: int | None
    error: str
    latency_ms: int


class Sender:
    """POSTs to one destination, keeping its connection between batches; the URL is
    checked (DestinationRefused) on the first send."""

    def __init__(self, url: str):
        self.url = url
        self.destination: Destination | None = None
        self.pool: urllib3.HTTPConnectionPool | None = None

    def _pool(self) -> urllib3.HTTPConnectionPool:
        if self.pool is None:
            d = self.destination = destination_check(self.url)
            options = {
                "timeout": urllib3.Timeout(total=TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT),
                "retries": False,
                "maxsize": 1,
            }
            if d.scheme == "https":
                self.pool = urllib3.HTTPSConnectionPool(
                    d.address, d.port, server_hostname=d.host, assert_hostname=d.host, **options
                )
            else:
                self.pool = urllib3.HTTPConnectionPool(d.address, d.port, **options)
        return self.pool

    def post(self, body: bytes, headers: dict[str, str]) -> Response:
        started = time.monotonic()
        try:
            pool = self._pool()
            response = pool.urlopen(
                "POST",
                self.destination.target,
                body=body,
                headers={"Host": self.destination.host_header, **headers},
                redirect=False,
                preload_content=False,
            )
            response.read(RESPONSE_READ_LIMIT)
            response.release_conn()
            status, error = response.status, ""
        except DestinationRefused as exc:
            status, error = None, f"Refused: {exc}"
        except urllib3.exceptions.HTTPError as exc:
            status, error = None, _error_text(exc)
        latency = int((time.monotonic() - started) * 1000)
        return Response(status, error[:300], latency)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def _error_text(exc: Exception) -> str:
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # a TimeoutError subclass
        return "Could not connect"
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return "Timed out"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "TLS error: " + str(exc.args[0] if exc.args else exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:300]
