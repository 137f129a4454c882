"""examples/phone_billing.py, run as a user runs it, against the test server."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

from conftest import PASSWORD, SDK, Server
from tinydevcrm import Client


def test_the_phone_billing_example_bills_the_calls(server: Server, email: str) -> None:
    env = dict(os.environ, TDC_URL=server.url, TDC_EMAIL=email, TDC_PASSWORD=PASSWORD)
    run = subprocess.run(
        [sys.executable, "phone_billing.py"],
        cwd=SDK / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    lines = run.stdout.splitlines()
    assert lines[:4] == [
        "calls: 6000 records",
        "calls_paired: 3000 rows",
        "bills: 3000 rows",
        "monthly_totals: 3000 rows",
    ]
    # The tutorial's worked bill: 21:55:24 to 22:17:39, four daytime minutes, 0.36 + 4 x 0.09.
    assert (
        "  call 12 to 8959897264, 2026-02-09T21:55:24+00:00 to 2026-02-09T22:17:39+00:00 (00:22:15): 0.72"
        in lines
    )
    assert "total of 2748923299 for 2026-02: 1 call(s), 0.72" in lines
    assert "all 3000 prices agree with the tariff computed in Python" in lines
    # The appended call, 10:00:00 to 10:05:30 in the day: five complete minutes, 0.81.
    assert "appended 2 records (6002 in calls)" in lines
    assert lines[-1] == "total of 2748923299 for 2026-02: 2 call(s), 1.53"

    # The top three it printed (read through Parquet) are those of the JSON rows.
    with Client(server.url) as c:
        c.login(email, PASSWORD)
        rows = list(c.views.iter_rows("monthly_totals", filters={"period": "eq.2026-02"}))
    before = {r["subscriber"]: Decimal(r["total"]) for r in rows}
    before["2748923299"] = Decimal("0.72")  # the example printed the top three before its new call
    top = sorted(before.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    start = lines.index("highest totals in 2026-02:")
    assert lines[start + 1 : start + 4] == [f"  {s}: {t}" for s, t in top]
