"""Django integration: database backend, middleware, ``cow_session`` and ``manage.py cowsync``.

In ``settings.py``::

    DATABASES = {"default": {"ENGINE": "cowsync.integrations.django", ...}}
    INSTALLED_APPS = [..., "cowsync.integrations.django"]
    MIDDLEWARE = ["cowsync.integrations.django.middleware.CowSessionMiddleware", ...]
    COWSYNC = {"MODELS": ["inventory"], "ENABLE_AFTER_MIGRATE": True}

This package is both the ``ENGINE`` (Django loads :mod:`.base`) and the app (:mod:`.apps`).
See docs/django.md.
"""

from .session import cow_session

__all__ = ["cow_session"]
