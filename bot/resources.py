"""Where the files shipped beside the code live: the source tree, or `bot/_data` in a wheel.

The wheel build copies `policies/`, `checks/` and `examples/` into `bot/_data`; an editable
install reads them from the repository. Callers ask here and never guess.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_path(name: str) -> Path:
    packaged = _PACKAGE / "_data" / name
    return packaged if packaged.exists() else _PACKAGE.parent / name
