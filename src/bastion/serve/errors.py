"""The error a request can get wrong, carrying its HTTP status and the field at fault."""

from __future__ import annotations

from bastion.errors import BastionError


class RequestError(BastionError, ValueError):
    """A bad request: ``status`` (4xx, or 503/504 for overload and timeout), ``field`` (a JSON
    path such as ``inputs[2][0][5]``, or ``body`` / a header name), ``message``."""

    def __init__(
        self,
        status: int,
        field: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.status = status
        self.field = field
        self.message = message
        self.headers = headers or {}
