"""Server-sent events: the wire format (WHATWG HTML, "event stream interpretation")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional


@dataclass(frozen=True)
class Event:
    """One event of a channel's stream.

    ``id`` is the channel's sequence number (what a reconnect sends as ``Last-Event-ID``),
    ``type`` the SSE event name (``refresh``, ``reset``, ...), ``data`` the parsed JSON
    payload (the text itself when it is not JSON) and ``raw`` the payload as sent.
    """

    id: Optional[int]
    type: str
    data: Any
    raw: str


class Decoder:
    """Turns the lines of a stream into events; remembers the newest ``retry:`` hint.

    Push-style (:meth:`feed`, one line at a time) so that sync and async readers share it.
    """

    def __init__(self) -> None:
        self.retry_ms: Optional[int] = None
        self._data: list[str] = []
        self._name = ""
        self._last_id: Optional[str] = None

    def feed(self, line: str) -> Optional[Event]:
        """Takes one line (without its line break); answers the event a blank line completes."""
        if line == "":
            event = None
            if self._data:
                raw = "\n".join(self._data)
                event = Event(
                    id=_event_id(self._last_id),
                    type=self._name or "message",
                    data=_parse(raw),
                    raw=raw,
                )
            self._data, self._name = [], ""
            return event
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._name = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None

    def reset(self) -> None:
        """Forgets a half-received event (the connection dropped in the middle of it)."""
        self._data, self._name = [], ""

    def events(self, lines: Iterable[str]) -> Iterator[Event]:
        self.reset()
        for line in lines:
            event = self.feed(line)
            if event is not None:
                yield event


def _event_id(text: Optional[str]) -> Optional[int]:
    if text is None or not text.isdigit():
        return None
    return int(text)


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
