"""Uploads from a path, a pyarrow table and a DataFrame, read back through JSON and Parquet."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from tinydevcrm import Client, TinydevcrmError

SAMPLE = REPO / "sample.parquet"


def typed_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "name": pa.array(["ada", "bob", None, "dee"], pa.string()),
            "score": pa.array([1.5, -2.25, 0.0, None], pa.float64()),
            "active": pa.array([True, False, None, True], pa.bool_()),
            "day": pa.array(
                [dt.date(2026, 1, 31), None, dt.date(2024, 2, 29), dt.date(1999, 12, 31)],
                pa.date32(),
            ),
            "at": pa.array(
                [
                    dt.datetime(2026, 2, 1, 5, 56, 58, tzinfo=dt.timezone.utc),
                    None,
                    dt.datetime(2026, 2, 9, 21, 55, 24, 123456, tzinfo=dt.timezone.utc),
                    dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def test_a_parquet_file_uploaded_from_a_path_reads_back_equal(client: Client) -> None:
    created = client.tables.upload("calls", SAMPLE)
    assert created["table_name"] == "calls" and created["row_count"] == 6000
    original = pq.read_table(SAMPLE).sort_by("record_id")
    exported = client.tables.arrow("calls", order="record_id")
    assert exported.column_names == original.column_names
    assert exported.num_rows == 6000
    assert exported.to_pylist() == original.to_pylist()


def test_a_pyarrow_table_uploads_and_reads_back_with_its_types(client: Client) -> None:
    table = typed_table()
    created = client.tables.upload("typed", table)
    assert [c["column_type"] for c in created["columns"]] == [
        "bigint",
        "text",
        "double precision",
        "boolean",
        "date",
        "timestamp with time zone",
    ]
    back = client.tables.arrow("typed", order="id")
    assert back.to_pylist() == table.to_pylist()
    assert back.schema.field("day").type == pa.date32()
    assert pa.types.is_timestamp(back.schema.field("at").type)


def test_a_dataframe_uploads_and_reads_back_equal(client: Client) -> None:
    frame = pd.DataFrame(
        {
            "sku": ["a-1", "b-2", "c-3"],
            "qty": [3, 0, 12],
            "price": [9.99, 0.5, 100.0],
            "sold_at": pd.to_datetime(
                ["2026-01-01T10:00:00Z", "2026-01-02T11:30:00Z", "2026-01-03T00:00:01Z"]
            ),
        },
        index=[10, 20, 30],  # not uploaded
    )
    created = client.tables.upload("stock", frame)
    assert [c["column_name"] for c in created["columns"]] == ["sku", "qty", "price", "sold_at"]
    back = client.tables.dataframe("stock", order="sku")
    assert back["sku"].tolist() == frame["sku"].tolist()
    assert back["qty"].tolist() == frame["qty"].tolist()
    assert back["price"].tolist() == frame["price"].tolist()
    assert [t.isoformat() for t in back["sold_at"]] == [t.isoformat() for t in frame["sold_at"]]


def test_append_and_replace_take_frames_tables_and_paths(client: Client, tmp_path: Path) -> None:
    client.tables.upload("t", pd.DataFrame({"n": [1, 2]}))
    appended = client.tables.upload("t", pa.table({"n": pa.array([3], pa.int64())}), mode="append")
    assert (appended["mode"], appended["rows_written"], appended["row_count"]) == ("append", 1, 3)
    path = tmp_path / "more.parquet"
    pq.write_table(pa.table({"n": pa.array([7, 8], pa.int64())}), path)
    replaced = client.tables.upload("t", path, mode="replace")
    assert (replaced["mode"], replaced["rows_written"], replaced["row_count"]) == ("replace", 2, 2)
    assert [r["n"] for r in client.tables.rows("t", order="n")] == [7, 8]
    inserted = client.tables.insert("t", [{"n": 9}, {"n": None}])
    assert inserted["row_count"] == 4
    with pytest.raises(ValueError):
        client.tables.upload("t", path, mode="append", columns={"n": "bigint"})


def test_declared_columns_override_the_file_types(client: Client) -> None:
    frame = pd.DataFrame({"item": ["x", "y"], "amount": ["1.50", "20.25"]})
    created = client.tables.upload(
        "priced", frame, columns={"item": "text", "amount": "numeric(12,2)"}, unique=[["item"]]
    )
    assert {c["column_name"]: c["column_type"] for c in created["columns"]}[
        "amount"
    ] == "numeric(12,2)"
    rows = client.tables.rows("priced", order="item")
    assert [r["amount"] for r in rows] == ["1.50", "20.25"]
    assert client.tables.arrow("priced", order="item").column("amount").to_pylist() == [
        Decimal("1.50"),
        Decimal("20.25"),
    ]


def test_rows_take_filters_order_select_and_limit(client: Client) -> None:
    client.tables.upload("calls", SAMPLE)
    local = pq.read_table(SAMPLE).to_pandas()

    starts = client.tables.rows(
        "calls",
        filters={"record_type": "eq.start", "call_id": "lte.20"},
        order="call_id.desc",
        limit=5,
    )
    expected = (
        local[(local.record_type == "start") & (local.call_id <= 20)]
        .sort_values("call_id", ascending=False)
        .head(5)
    )
    assert [r["call_id"] for r in starts] == expected["call_id"].tolist()

    picked = client.tables.rows(
        "calls",
        filters=[("call_id", "in.(3,4)"), ("record_type", "neq.end")],
        select=["call_id", "source"],
        order="call_id",
    )
    assert picked == [
        {"call_id": c, "source": s}
        for c, s in local[local.call_id.isin([3, 4]) & (local.record_type != "end")][
            ["call_id", "source"]
        ].itertuples(index=False)
    ]

    assert client.tables.rows(
        "calls", filters={"call_id": 12}, select="record_id", order="record_id"
    ) == [{"record_id": 23}, {"record_id": 24}]
    assert client.tables.rows("calls", filters={"source": None}) == []
    assert len(client.tables.rows("calls")) == 100  # the server's default page

    every = list(client.tables.iter_rows("calls", order="record_id", page_size=700))
    assert [r["record_id"] for r in every] == sorted(local.record_id.tolist())

    frame = client.tables.dataframe(
        "calls", filters={"record_type": "eq.end"}, order="record_id", limit=3
    )
    assert (
        frame["record_id"].tolist()
        == local[local.record_type == "end"].sort_values("record_id").head(3)["record_id"].tolist()
    )

    with pytest.raises(ValueError):
        client.tables.rows("calls", filters={"record_type": "start"})  # no operator: ambiguous


def test_a_file_that_is_not_parquet_raises_the_servers_problem(
    client: Client, tmp_path: Path
) -> None:
    bad = tmp_path / "calls.parquet"
    bad.write_text("record_id,record_type\n1,start\n")
    with pytest.raises(TinydevcrmError) as e:
        client.tables.upload("calls", bad)
    err = e.value
    assert (err.status, err.code) == (400, "invalid_parquet")
    assert "not Parquet" in err.detail
    assert err.problem["code"] == "invalid_parquet" and err.problem["title"] == "Bad Request"
    with pytest.raises(TinydevcrmError) as e:
        client.tables.show("calls")
    assert (e.value.status, e.value.code) == (404, "not_found")


def test_server_side_query_errors_name_the_problem(client: Client) -> None:
    client.tables.upload("calls", SAMPLE)
    with pytest.raises(TinydevcrmError) as e:
        client.tables.rows("calls", filters={"nope": "eq.1"})
    assert (e.value.status, e.value.code) == (400, "unknown_column")
    with pytest.raises(TinydevcrmError) as e:
        client.tables.rows("calls", filters={"call_id": "eq.twelve"})
    assert (e.value.status, e.value.code) == (400, "invalid_filter")


def test_tables_list_show_export_and_drop(client: Client, tmp_path: Path) -> None:
    client.tables.upload("calls", SAMPLE)
    assert [t["table_name"] for t in client.tables.list()] == ["calls"]
    assert client.tables.show("calls")["row_count"] == 6000
    out = tmp_path / "starts.csv"
    client.tables.export("calls", out, format="csv", filters={"call_id": 1}, order="record_id")
    assert (
        out.read_text().splitlines()[0]
        == "record_id,record_type,record_timestamp,call_id,source,destination"
    )
    assert len(out.read_text().splitlines()) == 3
    client.tables.drop("calls")
    assert client.tables.list() == []
