"""Views, jobs and channels, round trip."""

from __future__ import annotations

import pytest

from conftest import REPO
from tinydevcrm import Client, TinydevcrmError


def test_views_create_list_show_refresh_rows_and_drop(client: Client) -> None:
    client.tables.upload("calls", REPO / "sample.parquet")
    view = client.views.create(
        "starts",
        "SELECT call_id, source FROM calls WHERE record_type = 'start'",
        unique_key=["call_id"],
    )
    assert (view["view_name"], view["row_count"], view["unique_key"]) == (
        "starts",
        3000,
        ["call_id"],
    )
    assert [v["view_name"] for v in client.views.list()] == ["starts"]
    assert client.views.show("starts")["sql_query"].startswith("SELECT call_id")
    refreshed = client.views.refresh("starts")
    assert refreshed["status"] in ("refreshed", "skipped")
    assert client.views.rows("starts", filters={"call_id": "lt.3"}, order="call_id") == [
        {"call_id": 1, "source": "1476368198"},
        {"call_id": 2, "source": "82673145569"},
    ]
    assert client.views.arrow("starts").num_rows == 3000
    assert client.views.dataframe("starts", order="call_id.desc", limit=1)["call_id"].tolist() == [
        3000
    ]
    with pytest.raises(TinydevcrmError) as e:
        client.views.create("broken", "SELECT nope FROM calls")
    assert (e.value.status, e.value.code) == (400, "invalid_sql")
    assert "position" in e.value.problem
    client.views.drop("starts")
    assert client.views.list() == []


def test_jobs_create_list_runs_pause_resume_and_delete(client: Client) -> None:
    client.views.create("clock", "SELECT random() AS r")
    job = client.jobs.create(
        "clock", "*/1 * * * * *", timezone="Europe/Paris", overlap="queue", retries=2
    )
    assert (job["view_name"], job["timezone"], job["overlap"], job["retries"], job["paused"]) == (
        "clock",
        "Europe/Paris",
        "queue",
        2,
        False,
    )
    assert [j["job_id"] for j in client.jobs.list()] == [job["job_id"]]
    assert client.jobs.show(job["job_id"])["crontab_def"] == "*/1 * * * * *"
    paused = client.jobs.pause(job["job_id"])
    assert paused["paused"] is True and paused["next_run_at"] is None
    resumed = client.jobs.resume(job["job_id"])
    assert resumed["paused"] is False and resumed["next_run_at"] is not None
    page = client.jobs.runs(job["job_id"], limit=5)
    assert set(page) >= {"runs", "next_cursor"}
    assert client.jobs.update(job["job_id"], crontab_def="@hourly")["crontab_def"] == "@hourly"
    with pytest.raises(TinydevcrmError) as e:
        client.jobs.create("clock", "61 * * * *")
    assert (e.value.code, e.value.problem["field"]) == ("invalid_crontab", "minute")
    client.jobs.delete(job["job_id"])
    assert client.jobs.list() == []


def test_channels_create_list_show_and_delete(client: Client) -> None:
    client.views.create("clock", "SELECT random() AS r")
    job = client.jobs.create("clock", "@hourly")
    by_job = client.channels.create(job_id=job["job_id"])
    by_view = client.channels.create(view_name="clock")
    assert by_job["job_id"] == job["job_id"] and by_view["view_name"] == "clock"
    assert {c["channel_id"] for c in client.channels.list()} == {
        by_job["channel_id"],
        by_view["channel_id"],
    }
    assert client.channels.show(by_view["channel_id"])["listen_url"].endswith(
        f"/channels/{by_view['channel_id']}/listen/"
    )
    with pytest.raises(ValueError):
        client.channels.create()
    client.channels.delete(by_job["channel_id"])
    assert [c["channel_id"] for c in client.channels.list()] == [by_view["channel_id"]]
    with pytest.raises(TinydevcrmError) as e:
        client.channels.show(by_job["channel_id"])
    assert e.value.status == 404


def test_another_users_things_are_not_found(server, client: Client, email: str) -> None:  # type: ignore[no-untyped-def]
    client.views.create("mine", "SELECT 1 AS one")
    with Client(server.url) as other:
        other.register("other-" + email, "correct-horse-battery")
        other.login("other-" + email, "correct-horse-battery")
        with pytest.raises(TinydevcrmError) as e:
            other.views.rows("mine")
    assert (e.value.status, e.value.code) == (404, "not_found")
