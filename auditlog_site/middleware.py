"""The health check for load balancers, the Content-Security-Policy header (Django 5.2
has none built in), and the REST API's headers and error shape on every API response."""

import logging
import time
from collections.abc import Callable

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from audit.api import error_body  # the API's one error shape

logger = logging.getLogger(__name__)


HEALTH_PATH = "/healthz"


class HealthCheckMiddleware:
    """GET /healthz: 200 "ok" while this process serves requests; with ?db=1 also
    asks the database (SELECT 1) and answers 503 when it does not answer. First in
    MIDDLEWARE, so a load balancer probing a host directly (its own Host header, plain
    HTTP) gets the answer rather than a 400 or a redirect to HTTPS; it reads no
    session, no cookie, and says nothing but "ok" or what is down."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path != HEALTH_PATH:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD"])
        if request.GET.get("db") == "1":
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
            except DatabaseError:
                logger.exception("Health check: the database does not answer")
                return _plain("database unavailable\n", 503)
        return _plain("ok\n", 200)


def _plain(text: str, status: int) -> HttpResponse:
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


class ContentSecurityPolicyMiddleware:
    """Adds settings.CONTENT_SECURITY_POLICY to every HTML response that has no policy
    of its own (a CSV download or JSON is not a document the browser runs)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if (
            policy
            and response.get("Content-Type", "").startswith("text/html")
            and "Content-Security-Policy" not in response
        ):
            response["Content-Security-Policy"] = policy
        return response


API_PATHS = ("/admin/v1/", "/admin/v2/", "/ingest/", "/api/openapi.json")


class ApiResponseMiddleware:
    """On the REST API's paths: the key's rate limit in X-RateLimit-* headers on every
    response (and Retry-After on a 429), and every error as the API's JSON error shape,
    even one raised before the API's own handlers run (an unknown path, a wrong method,
    an unexpected exception; any unknown path under them): never an HTML page there."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PATHS):
            return self.get_response(request)
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            response = _api_error_for(response)
        limit = getattr(request, "rate_limit", None)
        if limit is not None:
            ceiling, remaining, reset = limit
            response["X-RateLimit-Limit"] = str(ceiling)
            response["X-RateLimit-Remaining"] = str(max(remaining, 0))
            response["X-RateLimit-Reset"] = str(reset)
            if response.status_code == 429:
                response["Retry-After"] = str(max(reset - int(time.time()), 1))
        return response

    def process_exception(self, request: HttpRequest, exception: Exception):
        if request.path.startswith(API_PATHS):
            logger.exception("API request failed: %s %s", request.method, request.path)
            return _api_error(500, "server_error", "Server error", "Something went wrong.")
        return None


_STATUS_ERRORS = {
    400: ("bad_request", "Bad request", "The request is not valid."),
    401: ("unauthorized", "Unauthorized", "Send Authorization: Bearer <API key>."),
    403: ("forbidden", "Forbidden", "This key may not do that."),
    404: ("not_found", "Not found", "There is nothing at this path."),
    405: ("method_not_allowed", "Method not allowed", "This path answers GET only."),
}


def _api_error_for(response: HttpResponse) -> HttpResponse:
    code, title, detail = _STATUS_ERRORS.get(
        response.status_code, ("error", "Error", "The request failed.")
    )
    if response.status_code == 405 and response.get("Allow"):
        detail = f"This path answers {response['Allow']} only."
    new = _api_error(response.status_code, code, title, detail)
    if response.get("Allow"):
        new["Allow"] = response["Allow"]
    return new


def _api_error(status: int, code: str, title: str, detail: str) -> JsonResponse:
    return JsonResponse(error_body(status, code, title, detail), status=status)
