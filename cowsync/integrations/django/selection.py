"""Which tables ``COWSYNC["MODELS"]`` and ``COWSYNC["TABLES"]`` choose to sandbox.

``MODELS`` entries:

* ``"__all__"``: every model of every installed app except Django's own
  (``django.contrib.*``: auth, sessions, admin, ... keep writing to production; name their
  labels to sandbox them too);
* an app label, ``"inventory"``: every model of that app;
* a model, ``"inventory.Product"``: that model.

Concrete, managed, non-proxy models only, with the many-to-many tables Django creates
for them, and only those the database router lets migrate on the database.
``TABLES`` adds tables by name (``"items"``, ``"schema.items"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps as installed_apps
from django.db import router
from django.db.models import Model

from ...errors import ConfigurationError
from .conf import ALL, SETTING, CowSettings


def _project_app(label: str) -> bool:
    """Not one of Django's own apps (judged on the installed app, not a migration state's)."""
    try:
        return not installed_apps.get_app_config(label).name.startswith("django.")
    except LookupError:
        return True


def _models_for(entry: str, apps: Any) -> list[type[Model]]:
    if entry == ALL:
        return [
            model
            for config in apps.get_app_configs()
            if _project_app(config.label)
            for model in config.get_models(include_auto_created=True)
        ]
    if "." in entry:
        try:
            model = apps.get_model(entry)
        except (LookupError, ValueError) as exc:
            raise ConfigurationError(f"{SETTING}['MODELS']: no model {entry!r} ({exc})") from exc
        auto = [
            field.remote_field.through
            for field in model._meta.local_many_to_many
            if field.remote_field.through._meta.auto_created
        ]
        return [model, *auto]
    try:
        config = apps.get_app_config(entry)
    except LookupError as exc:
        raise ConfigurationError(
            f"{SETTING}['MODELS']: no installed app labelled {entry!r}; use an app label, "
            "'app_label.ModelName' or '__all__'"
        ) from exc
    return list(config.get_models(include_auto_created=True))


def selected_tables(settings: CowSettings, using: str, apps: Any = None) -> list[str]:
    """The table names the settings choose on database ``using``, in a stable order.

    ``apps`` is the model registry to read (default: the installed models; the
    post-migrate hook passes the state the migrations left).
    """
    chosen: list[str] = []
    for entry in settings.models:
        for model in _models_for(entry, apps or installed_apps):
            opts = model._meta
            if opts.proxy or not opts.managed or opts.swapped:
                continue
            if not router.allow_migrate_model(using, model):
                continue
            chosen.append(opts.db_table)
    chosen.extend(settings.tables)
    return list(_unique(chosen))


def _unique(names: Iterable[str]) -> Iterable[str]:
    seen: set[str] = set()
    for name in names:
        if name not in seen:
            seen.add(name)
            yield name
