"""Simulators for runfleet's system tests (GitHub and the actions runner)."""
