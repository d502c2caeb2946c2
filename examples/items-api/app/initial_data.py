"""Create the first superuser: `python -m app.initial_data`, after `alembic upgrade head`.

Idempotent, so every deployment can run it: an existing account is left as it is (its
password may have been changed since), never overwritten.
"""

from __future__ import annotations

import logging
import sys

from sqlalchemy import select
from sqlalchemy.orm import Session

from .config import ConfigError, SuperuserSettings, load_superuser_settings
from .db import make_engine
from .models import User
from .security import hash_password

log = logging.getLogger("app.initial_data")


def create_first_superuser(session: Session, settings: SuperuserSettings) -> bool:
    """True when the account was created, False when it already existed."""
    if session.scalar(select(User.id).where(User.email == settings.email)) is not None:
        return False
    session.add(
        User(
            email=settings.email,
            hashed_password=hash_password(settings.password),
            is_superuser=True,
        )
    )
    session.commit()
    return True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    try:
        settings = load_superuser_settings()
    except ConfigError as exc:
        sys.exit(f"configuration error: {exc}")
    engine = make_engine(settings.database)
    with Session(engine) as session:
        created = create_first_superuser(session, settings)
    engine.dispose()
    log.info("%s first superuser %s", "Created" if created else "Kept the", settings.email)


if __name__ == "__main__":
    main()
