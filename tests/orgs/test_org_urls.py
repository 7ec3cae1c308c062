"""Every page under /o/<org id>/: an id that no database column could hold is a 404,
like any other id that names nothing, never a 500."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

TOO_BIG = "99999999999999999999999"
ID_PARAM = re.compile(r"<(?:[a-z_]+:)?([a-z_]+)>")


def org_routes() -> list[str]:
    """The route of every URL pattern under o/<org_id>/, whichever app declares it."""
    routes = []

    def walk(patterns, prefix=""):
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern) and route.startswith("o/<"):
                routes.append(route)

    walk(get_resolver().url_patterns)
    return routes


def test_the_org_pages_are_all_found():
    routes = org_routes()
    assert any(r.endswith("audit-log/") for r in routes)
    assert len(routes) >= 8  # audit: list, detail, settings; exports: five


@pytest.mark.parametrize("route", org_routes())
@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("too_big", [TOO_BIG, "9223372036854775808", "18446744073709551616"])
def test_an_out_of_range_org_id_is_404(client, admin, org, route, method, too_big):
    client.force_login(admin)
    url = "/" + ID_PARAM.sub(too_big, route)
    assert getattr(client, method)(url).status_code == 404


@pytest.mark.parametrize("route", [r for r in org_routes() if len(ID_PARAM.findall(r)) > 1])
def test_an_out_of_range_id_of_the_orgs_own_objects_is_404(client, admin, org, route):
    client.force_login(admin)
    url = "/" + ID_PARAM.sub(str(org.pk), route, count=1)
    url = ID_PARAM.sub(TOO_BIG, url)
    assert client.get(url).status_code == 404


def test_the_largest_id_is_still_an_ordinary_404(client, admin, org):
    client.force_login(admin)
    assert client.get("/o/9223372036854775807/audit-log/").status_code == 404
    assert client.get(f"/o/{org.pk}/audit-log/events/9223372036854775807/").status_code == 404
