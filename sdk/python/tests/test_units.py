"""The parts that need no server: the event-stream decoder and the filter syntax."""

from __future__ import annotations

import pytest

from tinydevcrm._client import _filter_params, _read_params
from tinydevcrm._sse import Decoder


def test_the_decoder_reads_events_ids_comments_and_retry_hints() -> None:
    decoder = Decoder()
    lines = [
        "retry: 3000",
        "",
        ": keep-alive",
        "",
        "event: refresh",
        "id: 7",
        'data: {"row_count": 3}',
        "",
        "event: note",
        "data: first line",
        "data:second line",
        "",  # no id: keeps the last one
        "retry: 500",
        "",
    ]
    events = list(decoder.events(lines))
    assert [(e.type, e.id, e.data) for e in events] == [
        ("refresh", 7, {"row_count": 3}),
        ("note", 7, "first line\nsecond line"),
    ]
    assert events[0].raw == '{"row_count": 3}'
    assert decoder.retry_ms == 500


def test_the_decoder_drops_an_event_cut_off_before_its_blank_line() -> None:
    events = list(
        Decoder().events(
            ["event: refresh", "id: 1", "data: {}", "", "event: refresh", "id: 2", "data: {"]
        )
    )
    assert [e.id for e in events] == [1]


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
