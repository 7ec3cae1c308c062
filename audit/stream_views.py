"""The Streams pages under Security › Audit log: the list with the add form, and one
stream's page with its delivery log, edit form and actions. Every POST redirects."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from orgs.access import org_for_admin
from orgs.models import Plan

from .models import Stream
from .services import Actor, request_meta
from .stream_forms import StreamForm
from .streams import (
    Author,
    StreamRefused,
    lag_text,
    stream_create,
    stream_delete,
    stream_lag,
    stream_limit_refusal,
    stream_pause,
    stream_refusal,
    stream_resume,
    stream_secret_rotate,
    stream_test,
    stream_update,
)

SECRET_SHOWN = "audit.stream-secret-shown"


def _author(request) -> Author:
    return Author(Actor.for_user(request.user), user=request.user, **request_meta(request))


def _org_stream(request, org_id: int, stream_id: int) -> Stream:
    org = org_for_admin(request.user, org_id)
    return get_object_or_404(
        Stream.objects.select_related("organization__plan"), pk=stream_id, organization=org
    )


def _shown_secret(request, stream: Stream) -> str:
    shown = request.session.get(SECRET_SHOWN)
    if shown and shown.get("stream") == stream.pk:
        del request.session[SECRET_SHOWN]
        return shown["secret"]
    return ""


def _list_page(request, org, form: StreamForm, status: int = 200):
    streams = list(Stream.objects.filter(organization=org))
    context = {
        "org": org,
        "nav": "streams",
        "streams": [(s, lag_text(stream_lag(s))) for s in streams],
        "form": form,
        "refusal": stream_refusal(org),
        "limit_refusal": stream_limit_refusal(org),
        "plans_with_streaming": Plan.objects.filter(audit_log=True, streaming=True),
    }
    return render(request, "audit/stream_list.html", context, status=status)


@login_required
@require_GET
@never_cache
def stream_list(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    return _list_page(request, org, StreamForm())


@login_required
@require_POST
def stream_add(request, org_id: int):
    org = org_for_admin(request.user, org_id)
    form = StreamForm(request.POST)
    if not form.is_valid():
        return _list_page(request, org, form, status=400)
    try:
        stream, secret = stream_create(
            organization=org,
            **{k: form.cleaned_data[k] for k in ("name", "url", "categories", "product_kinds")},
            authorization=form.cleaned_data["authorization"],
            by=_author(request),
        )
    except StreamRefused as exc:
        form.add_error(None, str(exc))
        return _list_page(request, org, form, status=400)
    request.session[SECRET_SHOWN] = {"stream": stream.pk, "secret": secret}
    messages.success(request, f"Stream {stream.name} added: events recorded from now on go to it.")
    return redirect("audit:stream-detail", org.pk, stream.pk)


def _detail_page(request, stream: Stream, form: StreamForm, status: int = 200):
    context = {
        "org": stream.organization,
        "nav": "streams",
        "stream": stream,
        "lag": lag_text(stream_lag(stream)),
        "attempts": stream.attempts.order_by("-id")[:100],
        "secret": _shown_secret(request, stream),
        "form": form,
        "refusal": stream_refusal(stream.organization),
    }
    return render(request, "audit/stream_detail.html", context, status=status)


@login_required
@require_GET
@never_cache
def stream_detail(request, org_id: int, stream_id: int):
    stream = _org_stream(request, org_id, stream_id)
    initial = {f: getattr(stream, f) for f in ("name", "url", "categories", "product_kinds")}
    return _detail_page(request, stream, StreamForm(initial=initial, editing=True))


@login_required
@require_POST
def stream_edit(request, org_id: int, stream_id: int):
    stream = _org_stream(request, org_id, stream_id)
    form = StreamForm(request.POST, editing=True)
    if not form.is_valid():
        return _detail_page(request, stream, form, status=400)
    try:
        changed = stream_update(
            stream=stream,
            **{k: form.cleaned_data[k] for k in ("name", "url", "categories", "product_kinds")},
            authorization=form.authorization_value(),
            by=_author(request),
        )
    except StreamRefused as exc:
        form.add_error(None, str(exc))
        return _detail_page(request, stream, form, status=400)
    if changed:
        messages.success(request, f"Saved: {', '.join(changed)}.")
    else:
        messages.info(request, "Nothing changed.")
    return redirect("audit:stream-detail", org_id, stream.pk)


def _action(request, org_id: int, stream_id: int, service, done: str, already: str = ""):
    stream = _org_stream(request, org_id, stream_id)
    if refusal := stream_refusal(stream.organization):
        messages.error(request, refusal)
    elif service(stream=stream, by=_author(request)) is False:
        messages.info(request, already.format(name=stream.name))
    else:
        messages.success(request, done.format(name=stream.name))
    return redirect("audit:stream-detail", org_id, stream.pk)


@login_required
@require_POST
def stream_pause_view(request, org_id: int, stream_id: int):
    return _action(
        request,
        org_id,
        stream_id,
        stream_pause,
        "Stream {name} paused: nothing is sent until you resume it, and nothing is lost.",
        "Stream {name} was already paused.",
    )


@login_required
@require_POST
def stream_resume_view(request, org_id: int, stream_id: int):
    return _action(
        request,
        org_id,
        stream_id,
        stream_resume,
        "Stream {name} resumed: everything recorded while it was paused is on its way, in order.",
        "Stream {name} was not paused.",
    )


@login_required
@require_POST
def stream_test_view(request, org_id: int, stream_id: int):
    return _action(
        request,
        org_id,
        stream_id,
        stream_test,
        "Test event sent to {name}: its delivery shows in the log below in a moment.",
    )


@login_required
@require_POST
def stream_rotate_view(request, org_id: int, stream_id: int):
    stream = _org_stream(request, org_id, stream_id)
    if refusal := stream_refusal(stream.organization):
        messages.error(request, refusal)
        return redirect("audit:stream-detail", org_id, stream.pk)
    secret = stream_secret_rotate(stream=stream, by=_author(request))
    request.session[SECRET_SHOWN] = {"stream": stream.pk, "secret": secret}
    messages.success(request, "New signing secret made: the old one also signs for a while.")
    return redirect("audit:stream-detail", org_id, stream.pk)


@login_required
@require_POST
def stream_delete_view(request, org_id: int, stream_id: int):
    stream = _org_stream(request, org_id, stream_id)
    stream_delete(stream=stream, by=_author(request))
    messages.success(request, f"Stream {stream.name} deleted: nothing more is sent to it.")
    return redirect("audit:stream-list", org_id)
