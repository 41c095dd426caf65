"""The app's extensions, created once and registered on each app by the factory."""

from cowsync.integrations.flask import CowSync

cow = CowSync()
