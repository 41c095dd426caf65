"""Framework integrations: cowsync.integrations.django and cowsync.integrations.flask."""
