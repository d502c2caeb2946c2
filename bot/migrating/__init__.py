"""Applying the change's migrations the way the repository does: at API start-up, SQL files,
a command, or Alembic revision by revision (`versioned`); and the populated replay, the
change once more on generated production-like rows (`replay`).

May import: sandbox (to run the change's commands confined), observing, policy.
"""
