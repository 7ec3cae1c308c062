"""Model instances from hand-written SQL, for the few lookups every page makes.

Building a query through the ORM costs about 0.3-0.5 ms of Python before the database
sees it (a join of three models more); the lookups run on every page (who may see the
organization, the integrity panel) are each one short indexed SELECT, so that building
was most of their cost. `ModelColumns` lists a model's columns for a SELECT and turns
the values read back into an instance exactly as the ORM would: the same converters
(SQLite's text datetimes and integer booleans), the same `Model.from_db`.
"""

from django.db import connection
from django.db.models import Model


class ModelColumns:
    """The columns of `model` (all concrete ones, or only `fields` by attname, in that
    order) under the table alias `alias`: `sql()` for the SELECT list, `instance(values)`
    for a row."""

    def __init__(self, model: type[Model], alias: str, fields: tuple[str, ...] | None = None):
        self.model, self.alias = model, alias
        by_attname = {f.attname: f for f in model._meta.concrete_fields}
        self.fields = (
            list(by_attname.values()) if fields is None else [by_attname[a] for a in fields]
        )
        self.attnames = [f.attname for f in self.fields]
        self._sql: str | None = None
        self._converters: list | None = None

    def __len__(self) -> int:
        return len(self.fields)

    def sql(self) -> str:
        if self._sql is None:
            quote = connection.ops.quote_name
            self._sql = ", ".join(f"{self.alias}.{quote(f.column)}" for f in self.fields)
        return self._sql

    def instance(self, values) -> Model:
        return self.model.from_db(connection.alias, self.attnames, self.converted(values))

    def converted(self, values) -> list:
        """A row's values as the model's fields hold them (e.g. SQLite's text datetimes
        made datetimes), in the order of `fields`."""
        values = list(values)
        for i, converters, column in self._converters_list():
            value = values[i]
            for convert in converters:
                value = convert(value, column, connection)
            values[i] = value
        return values

    def _converters_list(self) -> list:
        if self._converters is None:
            found = []
            for i, field in enumerate(self.fields):
                column = field.get_col(self.alias)
                converters = connection.ops.get_db_converters(column)
                converters += column.get_db_converters(connection)
                if converters:
                    found.append((i, converters, column))
            self._converters = found
        return self._converters


def table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)
