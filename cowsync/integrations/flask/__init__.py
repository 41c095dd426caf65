"""Flask integration: requests bound to the cowsync session their headers name.

>>> from cowsync.integrations.flask import CowSync   # doctest: +SKIP
>>> cow = CowSync(app)                                # or CowSync() + cow.init_app(app)

* :class:`CowSync` (:mod:`.extension`): the extension, its per-request binding,
  ``cow.connection()`` and ``cow.session()``;
* :mod:`.settings`: the ``COWSYNC_*`` configuration keys;
* :mod:`.sqlalchemy_binding`: SQLAlchemy engines (Flask-SQLAlchemy or plain) whose pooled
  connections follow the binding (the ``sqlalchemy`` extra);
* :mod:`.cli`: ``flask cowsync <command>``, cowsync's review commands on the app's database.

See docs/flask.md.
"""

from .extension import EXTENSION_KEY, AppState, CowSync
from .http_errors import CowHeaderError, CowSessionForbidden
from .settings import FlaskSettings

__all__ = [
    "EXTENSION_KEY",
    "AppState",
    "CowHeaderError",
    "CowSessionForbidden",
    "CowSync",
    "FlaskSettings",
]
