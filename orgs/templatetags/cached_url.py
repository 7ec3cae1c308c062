"""`{% url %}` with its answers remembered: the same tag, installed in place of Django's
as a template builtin (settings.TEMPLATES), so every template keeps writing `{% url %}`.

Django's reverse() walks the URL resolver on each call, about 0.1 ms; an organization's
page reverses a dozen links (header, navigation, filters, export), a large share of the
page's time. A URL depends only on the view name, its arguments, the URLconf, the script
prefix, the language and the current app, so the answer is kept per process under all of
them, for arguments that are plain ints and strings (anything else is reversed each
time). A reverse that fails is never kept: it raises as before."""

from functools import lru_cache

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.template import Library
from django.template.defaulttags import URLNode
from django.template.defaulttags import url as django_url
from django.urls import NoReverseMatch, get_script_prefix, get_urlconf, reverse
from django.utils.html import conditional_escape
from django.utils.translation import get_language

register = Library()
_PLAIN = (int, str)


@lru_cache(maxsize=8192)
def _reverse(key: tuple) -> str:
    _, _, _, current_app, view_name, args, kwargs = key
    return reverse(view_name, args=args, kwargs=dict(kwargs), current_app=current_app)


def reverse_cached(view_name: str, args=(), kwargs=None, current_app=None) -> str:
    """reverse(), remembered for plain int and str arguments (see the module docstring)."""
    kwargs = kwargs or {}
    if not all(type(a) in _PLAIN for a in (*args, *kwargs.values())):
        return reverse(view_name, args=args, kwargs=kwargs, current_app=current_app)
    urlconf = get_urlconf() or settings.ROOT_URLCONF
    key = (
        urlconf,
        get_script_prefix(),
        get_language(),
        current_app,
        view_name,
        tuple(args),
        tuple(sorted(kwargs.items())),
    )
    return _reverse(key)


@receiver(setting_changed)
def _forget(*, setting: str, **kwargs) -> None:
    if setting in ("ROOT_URLCONF", "FORCE_SCRIPT_NAME"):
        _reverse.cache_clear()


class CachedURLNode(URLNode):
    def render(self, context):
        args = [arg.resolve(context) for arg in self.args]
        kwargs = {k: v.resolve(context) for k, v in self.kwargs.items()}
        view_name = self.view_name.resolve(context)
        try:
            current_app = context.request.current_app
        except AttributeError:
            try:
                current_app = context.request.resolver_match.namespace
            except AttributeError:
                current_app = None
        url = ""
        try:
            url = reverse_cached(view_name, args, kwargs, current_app)
        except NoReverseMatch:
            if self.asvar is None:
                raise
        if self.asvar:
            context[self.asvar] = url
            return ""
        return conditional_escape(url) if context.autoescape else url


@register.tag
def url(parser, token):
    """Django's {% url %} (same syntax), reversing through reverse_cached."""
    node = django_url(parser, token)
    node.__class__ = CachedURLNode
    return node
