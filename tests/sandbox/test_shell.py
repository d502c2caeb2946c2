"""A failed command's one-line reason is the error, not the runtime's afterword."""

from __future__ import annotations

import pytest

from bot.sandbox.shell import reason

SQLALCHEMY = """\
Traceback (most recent call last):
  File "/app/migrate.py", line 3, in <module>
    engine.connect()
sqlalchemy.exc.OperationalError: (psycopg.OperationalError) password authentication failed
(Background on this error at: https://sqlalche.me/e/20/e3q8)
"""
GO = """\
panic: runtime error: index out of range [3] with length 3

goroutine 1 [running]:
main.main()
\t/tmp/x.go:5 +0x1d
exit status 2
"""
JAVA = """\
Exception in thread "main" java.lang.IllegalStateException: boom
\tat Main.main(Main.java:3)
"""


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (SQLALCHEMY, "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) password"),
        (GO, "panic: runtime error: index out of range [3] with length 3"),
        (JAVA, 'Exception in thread "main" java.lang.IllegalStateException: boom'),
        ("building...\nno such file: x.txt\n", "no such file: x.txt"),
        ("", ""),
    ],
)
def test_reason_is_the_error_line(output: str, expected: str) -> None:
    assert reason(output).startswith(expected)
