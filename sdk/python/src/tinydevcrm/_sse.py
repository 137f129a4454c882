"""The SDK's :class:`Event`, made from what ``httpx-sse`` decodes off the wire.

The event-stream format itself (fields, comments, multi-line data, the sticky ``id``, a
half-received event dropped at the end of a connection) is ``httpx-sse``'s job; what is ours
is the meaning: ids are the channel's sequence numbers, payloads are JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from httpx_sse import ServerSentEvent


@dataclass(frozen=True)
class Event:
    """One event of a channel's stream.

    ``id`` is the channel's sequence number (what a reconnect sends as ``Last-Event-ID``),
    ``type`` the SSE event name (``refresh``, ``reset``, ...), ``data`` the parsed JSON
    payload (the text itself when it is not JSON) and ``raw`` the payload as sent.
    """

    id: int | None
    type: str
    data: Any
    raw: str


def event_from(sse: ServerSentEvent) -> Event | None:
    """The event ``sse`` carries, ``None`` for a block without data.

    ``httpx-sse`` reports every block a blank line ends, ``retry: 3000`` alone too (with the
    sticky id of the event before it); the format dispatches no event for those. Every event
    the server sends has a JSON payload, so empty data means no data.
    """
    if sse.data == "":
        return None
    return Event(id=_event_id(sse.id), type=sse.event, data=_parse(sse.data), raw=sse.data)


def _event_id(text: str) -> int | None:
    # "" when no event of this connection had an id yet.
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def _parse(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
