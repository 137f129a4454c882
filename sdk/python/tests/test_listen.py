"""`listen`: every event once, across a server restart, token expiry and revocation."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import pytest

from conftest import ACCESS_TTL, PASSWORD, Server
from tinydevcrm import Client, Event, TinydevcrmError


class Listener:
    """Runs ``client.listen`` in a thread and queues what it yields (or raises)."""

    def __init__(self, client: Client, channel_id: str, **options: Any) -> None:
        self.items: "queue.Queue[Any]" = queue.Queue()
        self.reconnects: list[BaseException | None] = []
        self.gate = threading.Event()
        self.gate.set()
        start = client.channels.show(channel_id)["last_event_id"]

        def on_reconnect(delay: float, error: BaseException | None) -> None:
            self.reconnects.append(error)
            # Held closed by a test that wants events to happen while nobody listens.
            self.gate.wait(180)

        def run() -> None:
            try:
                for event in client.listen(
                    channel_id,
                    last_event_id=start,
                    on_reconnect=on_reconnect,
                    initial_backoff=0.2,
                    max_backoff=1.0,
                    **options,
                ):
                    self.items.put(event)
            except BaseException as e:  # handed to the test
                self.items.put(e)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def take(self, n: int, timeout: float = 60) -> list[Event]:
        out = []
        for _ in range(n):
            item = self.items.get(timeout=timeout)
            if isinstance(item, BaseException):
                raise item
            out.append(item)
        return out

    def nothing_more(self, wait: float = 2.0) -> None:
        with pytest.raises(queue.Empty):
            item = self.items.get(timeout=wait)
            pytest.fail(f"unexpected after the last event: {item!r}")


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def refreshes(client: Client, view: str, n: int) -> list[str]:
    """Refreshes ``view`` ``n`` times; the refresh ids, which the events carry as ``run_id``."""
    return [client.views.refresh(view)["refresh_id"] for _ in range(n)]


def clock_channel(client: Client) -> str:
    # random() makes every refresh a real one (a view whose inputs did not change is skipped).
    client.views.create("clock", "SELECT random() AS r")
    return str(client.channels.create(view_name="clock")["channel_id"])


def assert_in_order_once(events: list[Event], run_ids: list[str]) -> None:
    assert [e.type for e in events] == ["refresh"] * len(run_ids)
    assert [e.data["run_id"] for e in events] == run_ids
    ids = [e.id for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids


def test_listen_resumes_across_a_server_restart_yielding_every_event_once(
    server: Server, client: Client
) -> None:
    channel = clock_channel(client)
    listener = Listener(client, channel)
    before = refreshes(client, "clock", 3)
    got = listener.take(3)

    # The listener loses the server and is held back until events happened without it.
    listener.gate.clear()
    server.stop()
    wait_for(lambda: len(listener.reconnects) >= 1)
    server.start()
    while_away = refreshes(client, "clock", 3)
    listener.gate.set()
    got += listener.take(3)
    after = refreshes(client, "clock", 2)
    got += listener.take(2)

    assert_in_order_once(got, before + while_away + after)
    assert got[0].data["view_name"] == "clock" and got[0].data["status"] == "succeeded"
    listener.nothing_more()

    # Deleting the channel ends the stream; the reconnect's 404 ends the generator.
    client.channels.delete(channel)
    item = listener.items.get(timeout=30)
    assert isinstance(item, TinydevcrmError) and item.status == 404


def test_listen_refreshes_an_expired_token_and_misses_nothing(
    server: Server, client: Client, email: str
) -> None:
    channel = clock_channel(client)
    first = client.tokens
    listener = Listener(client, channel)
    # Another session does the writing, so that only the listener can refresh its client.
    with Client(server.url) as writer:
        writer.login(email, PASSWORD)
        ids = refreshes(writer, "clock", 2)
        got = listener.take(2)
        # The stream says token_expired and ends; the listener refreshes and resumes.
        time.sleep(ACCESS_TTL + 1.5)
        ids += refreshes(writer, "clock", 2)
        got += listener.take(2)
    assert_in_order_once(got, ids)
    assert client.tokens != first
    listener.nothing_more()


def test_listen_raises_when_the_session_is_revoked(server: Server, client: Client) -> None:
    channel = clock_channel(client)
    listener = Listener(client, channel)
    refreshes(client, "clock", 1)
    listener.take(1)
    tokens = client.tokens
    assert tokens is not None
    with Client(
        server.url, access_token=tokens.access, refresh_token=tokens.refresh
    ) as same_session:
        same_session.logout()
    item = listener.items.get(timeout=30)
    assert isinstance(item, TinydevcrmError)
    assert (item.status, item.code) == (401, "token_revoked")


def test_listen_after_an_unknown_event_id_yields_a_reset_then_live_events(client: Client) -> None:
    channel = clock_channel(client)
    ids = refreshes(client, "clock", 2)
    events = client.listen(channel, last_event_id=1000)
    reset = next(events)
    assert reset.type == "reset"
    assert reset.data["last_event_id"] == 1000 and reset.data["current_event_id"] == reset.id == 2
    ids = refreshes(client, "clock", 1)
    live = next(events)
    assert (live.type, live.id, live.data["run_id"]) == ("refresh", 3, ids[0])
    events.close()
