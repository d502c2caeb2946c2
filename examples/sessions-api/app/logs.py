"""One stdout logger in the Go original's format, so log checks read like its logs.

Lines look like `2025/11/22 03:59:37 Created session ... with state=pending`; errors carry
an `ERROR <what>: <server message>` prefix in the text rather than a level column, because
that is what operators (and Gatekeeper's log checks) grep for.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

log = logging.getLogger("sessions_api")
if not log.handlers:
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y/%m/%d %H:%M:%S"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def fatal(message: str) -> NoReturn:
    """Log and exit 1 at once, like Go's log.Fatalf.

    Raising from the lifespan instead would make Starlette and uvicorn print a traceback
    around the message, burying the one line that says what went wrong.
    """
    log.critical(message)
    for handler in log.handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(1)
