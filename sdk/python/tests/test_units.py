"""The parts that need no server: events from the stream's text, and the filter syntax."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import EventSource

from tinydevcrm import Event
from tinydevcrm._client import _filter_params, _read_params
from tinydevcrm._listen import Resume


def decoded(state: Resume, wire: str) -> list[Event]:
    """What a listener gets from one connection that sent ``wire``: decoded by httpx-sse
    from a response's body, turned into events by ``state``."""
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, text=wire)
    events = (state.event(sse) for sse in EventSource(response).iter_sse())
    return [e for e in events if e is not None]


def test_events_carry_ids_names_and_json_data_and_the_newest_retry_hint_is_kept() -> None:
    state = Resume(None, 0.5, 30.0)
    wire = (
        "retry: 3000\n\n"
        ": keep-alive\n\n"
        'event: refresh\nid: 7\ndata: {"row_count": 3}\n\n'
        "event: note\ndata: first line\ndata:second line\n\n"  # no id: keeps the last one
        "retry: 500\n\n"  # httpx-sse reports it as a block with the sticky id 7 and no data
    )
    events = decoded(state, wire)
    assert [(e.type, e.id, e.data) for e in events] == [
        ("refresh", 7, {"row_count": 3}),
        ("note", 7, "first line\nsecond line"),
    ]
    assert events[0].raw == '{"row_count": 3}'
    assert state.retry_ms == 500
    # The server ended the stream itself: its hint, not the backoff (plus up to 10% jitter).
    assert 0.5 <= state.delay(None) <= 0.55


def test_an_event_cut_off_before_its_blank_line_is_dropped() -> None:
    wire = 'event: refresh\nid: 1\ndata: {}\n\nevent: refresh\nid: 2\ndata: {'
    assert [e.id for e in decoded(Resume(None, 0.5, 30.0), wire)] == [1]


def test_filters_take_the_api_syntax_or_plain_values() -> None:
    assert _filter_params({"a": "gte.10", "b": 5, "c": None, "d": True, "e": "in.(x,y)"}) == [
        ("a", "gte.10"),
        ("b", "eq.5"),
        ("c", "is.null"),
        ("d", "eq.true"),
        ("e", "in.(x,y)"),
    ]
    assert _filter_params([("t", "gte.1"), ("t", "lt.5")]) == [("t", "gte.1"), ("t", "lt.5")]
    with pytest.raises(ValueError, match="eq.start"):
        _filter_params({"kind": "start"})
    with pytest.raises(ValueError):
        _filter_params({"kind": "between.1"})


def test_read_parameters_join_columns_and_keep_the_order_of_filters() -> None:
    assert _read_params({"a": 1}, ["b.desc", "c"], ("a", "b"), 10, cursor="x", fmt="parquet") == [
        ("a", "eq.1"),
        ("order", "b.desc,c"),
        ("select", "a,b"),
        ("limit", "10"),
        ("cursor", "x"),
        ("format", "parquet"),
    ]
    assert _read_params(None, "a.desc.nullslast,b", None, None) == [("order", "a.desc.nullslast,b")]
