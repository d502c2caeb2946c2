"""The Jinja2 environment of the service's HTML pages (bot/app/templates/): one for the dashboard
and the sign-in, so both escape and trim alike and share the dashboard's filters."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

templates = Environment(
    loader=PackageLoader("bot.app", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
