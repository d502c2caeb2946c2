"""`ActionsError`: the step cannot even start. Raised while the event file and the dispatch
inputs are read (`bot.actions.event`, `bot.actions.dispatch`) or when a lookup needs a token the
step was not given; `bot.actions.run` and the command line turn it into exit 2.
"""

from __future__ import annotations


class ActionsError(Exception):
    """The step cannot even start: unreadable event file, missing inputs, no token for a
    lookup. The message says what to change in the workflow; the step exits 2."""
