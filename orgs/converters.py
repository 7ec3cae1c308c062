"""The path converter for database ids in URLs (`<id:org_id>`, `<id:event_id>`, ...).

Django's `int` matches any number of digits; an id past the 64-bit range of the
primary keys then reaches the database, and SQLite refuses it ("Python int too large
to convert to SQLite INTEGER"): a 500. This one does not match it, so such a URL is
a 404 like any other id that names nothing."""

from django.urls import register_converter

MAX_ID = 2**63 - 1  # BigAutoField on PostgreSQL (bigint) and SQLite (INTEGER)


class DatabaseIdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValueError(f"{value} is out of range for an id")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(DatabaseIdConverter, "id")
