"""AsyncClient: auth, JSON routes and `listen` as an async generator."""

from __future__ import annotations

import asyncio

import pytest

from conftest import ACCESS_TTL, PASSWORD, Server, free_port
from tinydevcrm import AsyncClient, TinydevcrmConnectionError, TinydevcrmError


def test_the_async_client_listens_across_a_token_expiry_yielding_every_event_once(
    server: Server, email: str
) -> None:
    async def main() -> None:
        async with AsyncClient(server.url) as c, AsyncClient(server.url) as writer:
            await c.register(email, PASSWORD)
            await c.login(email, PASSWORD)
            # Another session writes, so that only the listener can refresh its client.
            await writer.login(email, PASSWORD)
            assert (await c.me())["primary_email"] == email
            await c.request(
                "POST",
                "/views/create/",
                json={"view_name": "clock", "sql_query": "SELECT random() AS r"},
            )
            channel = (await c.request("POST", "/channels/create/", json={"view_name": "clock"}))[
                "channel_id"
            ]
            first = c.tokens

            async def refreshes(n: int) -> list[str]:
                return [
                    (await writer.request("POST", "/views/clock/refresh/"))["refresh_id"]
                    for _ in range(n)
                ]

            ids = await refreshes(2)
            events = c.listen(channel, last_event_id=0)
            got = [await asyncio.wait_for(events.__anext__(), 60) for _ in range(2)]
            await asyncio.sleep(ACCESS_TTL + 1.5)  # the stream says token_expired meanwhile
            ids += await refreshes(2)
            got += [await asyncio.wait_for(events.__anext__(), 60) for _ in range(2)]
            await events.aclose()

            assert [e.data["run_id"] for e in got] == ids
            assert [e.id for e in got] == [1, 2, 3, 4]
            assert c.tokens != first

            with pytest.raises(TinydevcrmError) as e:
                await c.request(
                    "POST", "/views/create/", json={"view_name": "clock", "sql_query": "SELECT 1"}
                )
            assert (e.value.status, e.value.code) == (409, "name_taken")
            await c.logout()
        async with AsyncClient(f"http://127.0.0.1:{free_port()}") as nowhere:
            with pytest.raises(TinydevcrmConnectionError):
                await nowhere.login(email, PASSWORD)

    asyncio.run(main())
