"""Gatekeeper: validates builder-branch fixes end to end and decides approve, review or reject."""

__version__ = "0.1.0"
