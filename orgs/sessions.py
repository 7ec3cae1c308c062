"""Django's database sessions (SESSION_ENGINE), read by one written-out SELECT.

Every signed-in request reads its session; through the ORM that lookup cost about
0.4 ms of Python to build (orgs.sqlrows says why). The row, the expiry check and
everything else are Django's own: same table, same encoding, same writes."""

from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.sessions.backends import db
from django.db import connection
from django.utils import timezone

from .sqlrows import table

# Sessions signed in before orgs.backends.AccountBackend name Django's ModelBackend,
# which authenticates the same accounts the same way: they stay signed in.
_BACKENDS_RENAMED = {"django.contrib.auth.backends.ModelBackend": "orgs.backends.AccountBackend"}


class SessionStore(db.SessionStore):
    def load(self):
        data = super().load()
        backend = data.get(BACKEND_SESSION_KEY)
        if backend in _BACKENDS_RENAMED:
            data[BACKEND_SESSION_KEY] = _BACKENDS_RENAMED[backend]
        return data

    def _get_session_from_db(self):
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT session_data FROM {table(self.model)}"
                " WHERE session_key = %s AND expire_date > %s",
                [self.session_key, now],
            )
            row = cursor.fetchone()
        if row is None:  # unknown or expired: a new, empty session, as Django does
            self._session_key = None
            return None
        return self.model(session_key=self.session_key, session_data=row[0])
