"""Phone bills from call records: docs/tutorials/phone-billing.md, in Python.

Uploads the call records (sample.parquet), builds the tutorial's three views from the SQL files
in docs/tutorials/sql/, reads a bill as dicts and the month's totals as a pandas DataFrame
(through the Parquet export), checks every price against the tariff computed here in Python,
then appends a call from a DataFrame and refreshes the views.

    pip install './sdk/python[pandas]'
    TDC_URL=http://localhost:8000 TDC_EMAIL=billing@example.com TDC_PASSWORD=test1234 \\
        python sdk/python/examples/phone_billing.py

The user is registered when it does not exist yet; it must not have a table `calls` already.
`sdk/python/tests/test_example.py` runs this against a server of its own.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd

from tinydevcrm import Client, TinydevcrmError

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "sample.parquet"
SQL = REPO / "docs" / "tutorials" / "sql"

STANDING_CHARGE = Decimal("0.36")
PER_MINUTE = Decimal("0.09")
DAY_STARTS, DAY_ENDS = dt.timedelta(hours=6), dt.timedelta(hours=22)

SUBSCRIBER, PERIOD = "2748923299", "2026-02"


def tariff(started: dt.datetime, ended: dt.datetime) -> Decimal:
    """The tutorial's tariff, independently of its SQL: 0.36 a call, plus 0.09 for each
    complete minute inside a day's 06:00-22:00 window (cut per day), nights free."""
    cycles = 0
    day = dt.datetime.combine(started.date(), dt.time(), tzinfo=started.tzinfo)
    while day <= ended:
        inside = min(ended, day + DAY_ENDS) - max(started, day + DAY_STARTS)
        if inside > dt.timedelta(0):
            cycles += math.floor(inside.total_seconds() / 60)
        day += dt.timedelta(days=1)
    return STANDING_CHARGE + PER_MINUTE * cycles


def month_total(client: Client) -> dict[str, Any]:
    rows = client.views.rows(
        "monthly_totals", filters={"subscriber": f"eq.{SUBSCRIBER}", "period": f"eq.{PERIOD}"}
    )
    return rows[0]


def main() -> dict[str, Any]:
    url = os.environ.get("TDC_URL", "http://localhost:8000")
    email = os.environ.get("TDC_EMAIL", "billing@example.com")
    password = os.environ.get("TDC_PASSWORD", "test1234")

    with Client(url) as client:
        # 0. A user: registering an existing one is a 409 `email_taken`, and logging in works.
        try:
            client.register(email, password)
        except TinydevcrmError as e:
            if e.code != "email_taken":
                raise
        client.login(email, password)
        if any(t["table_name"] == "calls" for t in client.tables.list()):
            sys.exit(f"{email} already has a table `calls`: use another TDC_EMAIL")

        # 1. The call records.
        calls = client.tables.upload("calls", SAMPLE)
        print(f"calls: {calls['row_count']} records")

        # 2.-3. Pair start and end records into calls, then price every call.
        for name, key in (
            ("calls_paired", ["call_id"]),
            ("bills", ["call_id"]),
            ("monthly_totals", None),
        ):
            view = client.views.create(name, (SQL / f"{name}.sql").read_text(), unique_key=key)
            print(f"{name}: {view['row_count']} rows")

        # 4. One subscriber's bill for one month, as dicts (the JSON rows).
        print(f"bill of {SUBSCRIBER} for {PERIOD}:")
        bill = client.views.rows(
            "bills",
            filters={"subscriber": f"eq.{SUBSCRIBER}", "period": f"eq.{PERIOD}"},
            order="started_at",
        )
        for row in bill:
            print(
                f"  call {row['call_id']} to {row['destination']}, {row['started_at']} to {row['ended_at']} ({row['duration']}): {row['price']}"
            )
        total = month_total(client)
        print(f"total of {SUBSCRIBER} for {PERIOD}: {total['calls']} call(s), {total['total']}")

        # Every bill as a DataFrame, through the Parquet export. Timestamps arrive typed; an
        # unconstrained `numeric` arrives as text, exact, for Decimal.
        bills = client.views.dataframe("bills")
        computed = [
            tariff(s.to_pydatetime(), e.to_pydatetime())
            for s, e in zip(bills["started_at"], bills["ended_at"])
        ]
        wrong = [
            (c, p, q)
            for c, p, q in zip(bills["call_id"], bills["price"].map(Decimal), computed)
            if p != q
        ]
        if wrong:
            sys.exit(
                f"{len(wrong)} prices disagree with the tariff, e.g. call {wrong[0][0]}: {wrong[0][1]} != {wrong[0][2]}"
            )
        print(f"all {len(bills)} prices agree with the tariff computed in Python")

        totals = client.views.dataframe("monthly_totals", filters={"period": f"eq.{PERIOD}"})
        totals["total"] = totals["total"].map(Decimal)
        top = totals.sort_values(["total", "subscriber"], ascending=[False, True]).head(3)
        print(f"highest totals in {PERIOD}:")
        for subscriber, amount in zip(top["subscriber"], top["total"]):
            print(f"  {subscriber}: {amount}")

        # 5. A new call from a DataFrame (appended), then the views refreshed in order.
        call_id = (
            client.tables.rows("calls", select="call_id", order="call_id.desc", limit=1)[0][
                "call_id"
            ]
            + 1
        )
        record_id = (
            client.tables.rows("calls", select="record_id", order="record_id.desc", limit=1)[0][
                "record_id"
            ]
            + 1
        )
        new = pd.DataFrame(
            {
                "record_id": [record_id, record_id + 1],
                "record_type": ["start", "end"],
                "record_timestamp": pd.to_datetime(
                    ["2026-02-20T10:00:00Z", "2026-02-20T10:05:30Z"]
                ),
                "call_id": [call_id, call_id],
                "source": [SUBSCRIBER, SUBSCRIBER],
                "destination": ["5550100", "5550100"],
            }
        )
        added = client.tables.upload("calls", new, mode="append")
        print(f"appended {added['rows_written']} records ({added['row_count']} in calls)")
        for name in ("calls_paired", "bills", "monthly_totals"):
            client.views.refresh(name)
        after = month_total(client)
        print(f"total of {SUBSCRIBER} for {PERIOD}: {after['calls']} call(s), {after['total']}")

        return {
            "bill": bill,
            "total": total,
            "after": after,
            "top": list(zip(top["subscriber"], top["total"])),
        }


if __name__ == "__main__":
    main()
