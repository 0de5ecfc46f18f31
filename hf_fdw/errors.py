"""The one exception type the core raises, shaped for PostgreSQL."""

from __future__ import annotations


class HfFdwError(Exception):
    """A user-facing error: a message, the details, and the fix.

    Multicorn reports an exception that carries ``_is_multicorn_exception``
    as a plain PostgreSQL ERROR with DETAIL and HINT, without a Python
    traceback in the server log. ``code`` 3 means ERROR; any other value
    would end the session, so it is fixed here.
    """

    _is_multicorn_exception = True
    code = 3

    def __init__(
        self, message: str, detail: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        parts = [self.message]
        if self.detail:
            parts.append(f"DETAIL: {self.detail}")
        if self.hint:
            parts.append(f"HINT: {self.hint}")
        return "\n".join(parts)
