"""The one exception type the client raises, built from the server's problem JSON."""

from __future__ import annotations

import json
from typing import Any, Mapping

import httpx


class TinydevcrmError(Exception):
    """The server refused a request, or could not be reached.

    The API answers every error with problem JSON (RFC 9457) that carries a machine-readable
    ``code`` next to the human ``detail``; both are kept, and the whole body is in ``problem``
    for the members some errors add (``row``, ``column``, ``position``, ``field``, ...).
    """

    status: int | None
    code: str
    detail: str
    problem: dict[str, Any]

    def __init__(
        self,
        status: int | None,
        code: str,
        detail: str,
        problem: Mapping[str, Any] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.problem = dict(problem) if problem is not None else {}
        super().__init__(str(self))

    def __str__(self) -> str:
        prefix = f"{self.status} " if self.status is not None else ""
        return f"{prefix}{self.code}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, detail={self.detail!r})"

    @classmethod
    def from_response(cls, response: httpx.Response) -> "TinydevcrmError":
        """The error a non-2xx answer stands for (the response body must have been read)."""
        return cls.from_body(response.status_code, response.content)

    @classmethod
    def from_body(cls, status: int, content: bytes) -> "TinydevcrmError":
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            return cls(status, body["code"], str(body.get("detail", "")), body)
        # Not our problem JSON (a proxy's error page, say): keep the start of what came back.
        text = content.decode("utf-8", "replace").strip()
        return cls(status, "http_error", text[:500] or f"HTTP {status}", {})


class TinydevcrmConnectionError(TinydevcrmError):
    """The server could not be reached, or the connection failed before an answer came.

    ``status`` is ``None`` and ``code`` is ``"connection_failed"``; the transport's exception
    is the ``__cause__``. A subclass, so ``except TinydevcrmError`` still catches it.
    """

    def __init__(self, detail: str) -> None:
        super().__init__(None, "connection_failed", detail)
