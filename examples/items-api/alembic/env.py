"""Alembic's entry point: the database from app.config, the expected schema from app.models.

`target_metadata` is the models' metadata, so `alembic revision --autogenerate` writes the
difference between the models and the database and `alembic check` fails while there is one.
Each revision commits on its own (`transaction_per_migration`): a revision that must follow
a committed one, such as VALIDATE CONSTRAINT after ADD CONSTRAINT ... NOT VALID, can.
"""

from __future__ import annotations

import sys
from logging.config import fileConfig

from alembic import context
from app.config import ConfigError, load_database_settings
from app.models import Base
from sqlalchemy import URL, create_engine, pool

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def database_url() -> URL:
    try:
        return load_database_settings().url
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
