from django.apps import AppConfig


class MigrappConfig(AppConfig):
    """An app whose migrations change tables after they are enabled."""

    name = "tests.django.migrapp"
    label = "migrapp"
    default_auto_field = "django.db.models.BigAutoField"
