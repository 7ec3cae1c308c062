"""{% url %} through orgs.templatetags.cached_url: the same answers as Django's,
under every URLconf and script prefix, and the same errors."""

import pytest
from django.template import Context, Template
from django.urls import NoReverseMatch, clear_script_prefix, reverse, set_script_prefix

from orgs.templatetags.cached_url import reverse_cached


def render(text: str, **context) -> str:
    return Template(text).render(Context(context))


def test_the_tag_gives_what_reverse_gives():
    assert render("{% url 'audit:event-list' 7 %}") == reverse("audit:event-list", args=[7])
    assert render("{% url 'audit:event-detail' org_id=7 event_id=9 %}") == reverse(
        "audit:event-detail", kwargs={"org_id": 7, "event_id": 9}
    )
    assert render("{% url 'orgs:org-picker' as u %}[{{ u }}]") == f"[{reverse('orgs:org-picker')}]"


def test_each_argument_has_its_own_answer():
    assert render("{% url 'audit:event-list' 1 %}|{% url 'audit:event-list' 2 %}") == (
        f"{reverse('audit:event-list', args=[1])}|{reverse('audit:event-list', args=[2])}"
    )


def test_the_script_prefix_is_part_of_the_answer():
    plain = reverse_cached("audit:event-list", [3])
    set_script_prefix("/mounted/")
    try:
        assert reverse_cached("audit:event-list", [3]) == "/mounted" + plain
    finally:
        clear_script_prefix()
    assert reverse_cached("audit:event-list", [3]) == plain


def test_a_changed_urlconf_is_followed(settings):
    assert reverse_cached("orgs:org-picker") == "/"
    settings.ROOT_URLCONF = "tests.orgs.urls_elsewhere"
    assert reverse_cached("orgs:org-picker") == "/elsewhere/"


def test_a_missing_url_still_raises_and_as_var_gives_nothing():
    with pytest.raises(NoReverseMatch):
        render("{% url 'audit:no-such-page' 1 %}")
    assert render("{% url 'audit:no-such-page' 1 as u %}[{{ u }}]") == "[]"
    with pytest.raises(NoReverseMatch):  # and a failure is not remembered as an answer
        reverse_cached("audit:no-such-page", [1])


def test_an_argument_that_is_not_plain_is_reversed_each_time():
    class Id:
        def __str__(self):
            return "5"

    assert reverse_cached("audit:event-list", [Id()]) == reverse("audit:event-list", args=[5])
