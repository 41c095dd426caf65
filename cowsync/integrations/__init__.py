"""Framework integrations: Django (cowsync.integrations.django) and Flask (cowsync.integrations.flask)."""
