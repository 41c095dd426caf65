"""The Django app: the ``cowsync`` management command and the optional post-migrate hook."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CowsyncConfig(AppConfig):  # type: ignore[misc]
    """``INSTALLED_APPS = [..., "cowsync.integrations.django"]``."""

    name = "cowsync.integrations.django"
    label = "cowsync"
    verbose_name = "cowsync"
    default = True

    def ready(self) -> None:
        """Connect the post-migrate hook (it acts only with ``ENABLE_AFTER_MIGRATE``)."""
        from .migrate_hook import enable_after_migrate

        post_migrate.connect(
            enable_after_migrate, sender=self, dispatch_uid="cowsync-enable-after-migrate"
        )
