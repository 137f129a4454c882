"""API keys: a client on a key reads what its scopes allow and nothing else, listens, is never
refreshed; a session creates, lists and revokes keys."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from conftest import REPO, Server
from tinydevcrm import AsyncClient, Client, TinydevcrmError

SAMPLE = REPO / "sample.parquet"


class Recording(httpx.HTTPTransport):
    """The real HTTP transport, noting the path of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return super().handle_request(request)


@pytest.fixture
def calls(client: Client) -> Client:
    """The session client with table ``calls`` and view ``starts`` over it."""
    client.tables.upload("calls", SAMPLE)
    client.views.create("starts", "SELECT record_type, count(*) AS n FROM calls GROUP BY 1")
    return client


def key_client(server: Server, key: str, **kwargs: Any) -> Client:
    return Client(server.url, api_key=key, **kwargs)


def test_a_key_reads_its_view_and_is_refused_another_table_naming_the_scope(
    server: Server, calls: Client
) -> None:
    key = calls.keys.create("wall", ["views:read:starts"])["key"]
    with key_client(server, key) as c:
        rows = c.views.rows("starts", order="record_type")
        assert rows == [{"record_type": "end", "n": 3000}, {"record_type": "start", "n": 3000}]
        assert c.tokens is None and c.uses_key
        with pytest.raises(TinydevcrmError) as e:
            c.tables.rows("calls")
    assert (e.value.status, e.value.code) == (403, "missing_scope")
    assert e.value.problem["scope"] == "tables:read:calls"


def test_keys_are_created_listed_without_the_key_and_revoked(
    server: Server, calls: Client
) -> None:
    created = calls.keys.create(
        "billing",
        ["tables:read:calls", "*:read"],
        expires_at=datetime.now(timezone.utc) + timedelta(days=1),
        rate_limit_per_minute=100,
    )
    assert created["key"].startswith("tdc_") and created["rate_limit_per_minute"] == 100
    listed = calls.keys.list()
    assert [k["id"] for k in listed] == [created["id"]]
    assert "key" not in listed[0] and listed[0]["prefix"] == created["prefix"]
    assert created["key"] not in str(listed)
    with key_client(server, created["key"]) as c:
        assert [t["table_name"] for t in c.tables.list()] == ["calls"]
        calls.keys.revoke(created["id"])
        assert calls.keys.list() == []
        with pytest.raises(TinydevcrmError) as e:
            c.tables.list()
    assert (e.value.status, e.value.code) == (401, "token_invalid")
    assert "revoked" in e.value.detail


def test_a_key_client_cannot_log_in_or_manage_keys(server: Server, calls: Client) -> None:
    key = calls.keys.create("read", ["*:read"])["key"]
    with key_client(server, key) as c:
        for call in (lambda: c.login("a@example.com", "x"), c.refresh, c.logout):
            with pytest.raises(TinydevcrmError) as e:
                call()
            assert e.value.code == "api_key_client" and key not in str(e.value)
        with pytest.raises(TinydevcrmError) as e:
            c.keys.list()
        assert (e.value.status, e.value.code) == (403, "key_not_allowed")
    with pytest.raises(ValueError) as bad:
        Client(server.url, api_key="not-a-key-secret")
    assert "not-a-key-secret" not in str(bad.value)


def test_an_expired_key_raises_key_expired_without_any_refresh(
    server: Server, calls: Client
) -> None:
    at = datetime.now(timezone.utc) + timedelta(seconds=2)
    key = calls.keys.create("brief", ["views:read:starts"], expires_at=at)["key"]
    transport = Recording()
    with key_client(server, key, transport=transport) as c:
        assert len(c.views.rows("starts")) == 2
        time.sleep(max(0.0, (at - datetime.now(timezone.utc)).total_seconds()) + 0.5)
        transport.paths.clear()
        with pytest.raises(TinydevcrmError) as e:
            c.views.rows("starts")
    assert (e.value.status, e.value.code) == (401, "key_expired")
    # One request, the read: no refresh, no second try.
    assert transport.paths == ["/views/starts/rows/"]


def test_a_listen_key_receives_the_channels_events(server: Server, calls: Client) -> None:
    calls.views.create("clock", "SELECT random() AS r")
    channel = str(calls.channels.create(view_name="clock")["channel_id"])
    key = calls.keys.create("listener", [f"channels:listen:{channel}"])["key"]
    start = calls.channels.show(channel)["last_event_id"]
    items: "queue.Queue[Any]" = queue.Queue()
    listener = key_client(server, key)

    def run() -> None:
        try:
            for event in listener.listen(channel, last_event_id=start):
                items.put(event)
                return
        except BaseException as e:  # handed to the test
            items.put(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        run_id = calls.views.refresh("clock")["refresh_id"]
        item = items.get(timeout=60)
        if isinstance(item, BaseException):
            raise item
        assert item.type == "refresh" and item.data["run_id"] == run_id
        # The key reads nothing else: not even the view the channel is on.
        with pytest.raises(TinydevcrmError) as e:
            listener.views.rows("clock")
        assert (e.value.status, e.value.code) == (403, "missing_scope")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_from_env_is_the_only_way_the_environment_gives_a_key(
    server: Server, calls: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = calls.keys.create("env", ["views:read:starts"])["key"]
    monkeypatch.setenv("TDC_KEY", key)
    monkeypatch.setenv("TDC_URL", server.url)
    with Client.from_env() as c:
        assert len(c.views.rows("starts")) == 2
    with Client(server.url) as plain:
        with pytest.raises(TinydevcrmError) as e:
            plain.views.rows("starts")
        assert e.value.code == "token_missing"
    monkeypatch.delenv("TDC_KEY")
    with pytest.raises(ValueError):
        Client.from_env()


def test_the_async_client_reads_with_a_key_and_is_refused_outside_its_scopes(
    server: Server, calls: Client
) -> None:
    key = calls.keys.create("async", ["views:read:starts"])["key"]

    async def main() -> None:
        async with AsyncClient(server.url, api_key=key) as c:
            page = await c.request("GET", "/views/starts/rows/")
            assert len(page["rows"]) == 2
            with pytest.raises(TinydevcrmError) as e:
                await c.request("GET", "/tables/calls/rows/")
            assert (e.value.status, e.value.code) == (403, "missing_scope")
            with pytest.raises(TinydevcrmError) as e:
                await c.login("a@example.com", "x")
            assert e.value.code == "api_key_client"

    asyncio.run(main())


def test_a_rate_limited_key_raises_at_once_on_writes_and_on_waits_past_the_cap(
    server: Server, calls: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tinydevcrm._client as impl

    key = calls.keys.create(
        "slow", ["views:read:starts", "views:refresh:starts"], rate_limit_per_minute=1
    )["key"]
    transport = Recording()
    with key_client(server, key, transport=transport) as c:
        assert len(c.views.rows("starts")) == 2
        transport.paths.clear()
        # A POST may have had effects: never repeated.
        with pytest.raises(TinydevcrmError) as e:
            c.views.refresh("starts")
        assert (e.value.status, e.value.code) == (429, "rate_limited")
        assert transport.paths == ["/views/starts/refresh/"]
        # A GET waits the server's Retry-After and tries again, three times in all (the
        # waits recorded rather than slept: the window is a minute).
        waits: list[float] = []
        monkeypatch.setattr(time, "sleep", waits.append)
        transport.paths.clear()
        with pytest.raises(TinydevcrmError) as e:
            c.views.rows("starts")
        assert e.value.status == 429 and transport.paths == ["/views/starts/rows/"] * 3
        assert len(waits) == 2 and all(0 < w <= 60 for w in waits), waits
        # A GET whose Retry-After is past the cap raises at once.
        monkeypatch.setattr(impl, "MAX_RETRY_AFTER", 0.0)
        transport.paths.clear()
        with pytest.raises(TinydevcrmError) as e:
            c.views.rows("starts")
        assert e.value.status == 429 and transport.paths == ["/views/starts/rows/"]
