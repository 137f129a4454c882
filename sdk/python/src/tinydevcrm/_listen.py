"""What a channel listener keeps between connections, shared by the sync and async clients:
the headers to send, which events to hand out, when to refresh, how long to wait."""

from __future__ import annotations

import random
from typing import Dict

from httpx_sse import ServerSentEvent

from ._errors import TinydevcrmError
from ._sse import Event, event_from

#: Verdicts of :meth:`Resume.accept`.
YIELD, SKIP, EXPIRED = "yield", "skip", "expired"


class Resume:
    def __init__(
        self, last_event_id: int | None, initial_backoff: float, max_backoff: float
    ) -> None:
        self.last = last_event_id
        #: The newest ``retry:`` hint (milliseconds), kept across connections.
        self.retry_ms: int | None = None
        self.failures = 0
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff

    def headers(self, token: str | None) -> Dict[str, str]:
        # httpx-sse's connect_sse adds Accept: text/event-stream and Cache-Control.
        headers: Dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.last is not None:
            # The server replays every event after this one: nothing is lost while away.
            headers["Last-Event-ID"] = str(self.last)
        return headers

    def refused(self, problem: TinydevcrmError, can_refresh: bool) -> bool:
        """After a non-2xx answer: ``True`` to refresh the token and reconnect at once,
        ``False`` to wait and retry (429, 5xx); raises what retrying cannot change."""
        if problem.code == "token_expired" and can_refresh:
            return True
        if problem.status == 429 or (problem.status or 0) >= 500:
            return False
        raise problem

    def connected(self) -> None:
        self.failures = 0

    def event(self, sse: ServerSentEvent) -> Event | None:
        """The event a decoded block carries (``None`` for a bare ``retry:`` hint), after
        noting its ``retry:`` hint for :meth:`delay`."""
        if sse.retry is not None and sse.retry >= 0:
            self.retry_ms = sse.retry
        return event_from(sse)

    def accept(self, event: Event) -> str:
        """What to do with an event: hand it out, skip it (seen already), or refresh."""
        if event.type == "token_expired":
            return EXPIRED
        if event.type in ("revoked", "session_expired"):
            data = event.data if isinstance(event.data, dict) else {}
            raise TinydevcrmError(
                401,
                str(data.get("code", event.type)),
                str(data.get("detail", f"the stream ended: {event.type}")),
                data,
            )
        if event.type == "reset":
            # The server's new position: what came before it is gone (reload the view).
            self.last = event.id
        elif event.id is not None:
            if self.last is not None and event.id <= self.last:
                return SKIP
            self.last = event.id
        return YIELD

    def delay(self, error: BaseException | None) -> float:
        """Seconds to wait before reconnecting: the server's ``retry:`` hint after it ended the
        stream itself (shutting down, say), exponential backoff after failures; plus jitter,
        so that the listeners of a restarted server do not all come back at once."""
        if error is None:
            seconds = (
                self.retry_ms if self.retry_ms is not None else 3000
            ) / 1000.0
        else:
            self.failures += 1
            seconds = min(self.max_backoff, self.initial_backoff * 2 ** (self.failures - 1))
        return seconds * (1.0 + random.uniform(0.0, 0.1))
