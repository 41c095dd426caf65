"""Tests of the engine: deploy, enable/disable, the view and its trigger, sessions."""
