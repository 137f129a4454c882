"""The asyncio client: auth with transparent refresh, any JSON route, and ``listen``.

Uploads and Parquet reads stay on :class:`tinydevcrm.Client` (from asyncio, through
``asyncio.to_thread``): they are bulk transfers where a thread costs nothing, while listening
to many channels at once is where coroutines pay.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, List, Sequence, Tuple, Union

import httpx
from httpx_sse import aconnect_sse

from ._client import (
    JSON,
    Tokens,
    check_key,
    key_client_error,
    key_expired_stream,
    key_from_env,
    retry_wait,
)
from ._errors import TinydevcrmConnectionError, TinydevcrmError
from ._listen import EXPIRED, YIELD, Resume
from ._sse import Event


class AsyncClient:
    """Like :class:`tinydevcrm.Client` for asyncio, for auth, JSON routes and ``listen``;
    ``api_key=`` and :meth:`from_env` as there, and the same bounded retry of a GET answered
    ``429``."""

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        timeout: Union[float, httpx.Timeout] = httpx.Timeout(120.0, connect=10.0),
        on_tokens: Callable[[Tokens], None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        if api_key is not None and (access_token is not None or refresh_token is not None):
            raise ValueError("give either api_key or session tokens, not both")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        self._key = None if api_key is None else check_key(api_key)
        self._access = access_token
        self._refresh = refresh_token
        self._on_tokens = on_tokens
        self._refresh_lock = asyncio.Lock()

    @classmethod
    def from_env(cls, base_url: str | None = None, **kwargs: Any) -> "AsyncClient":
        """A client on the API key in ``TDC_KEY``, at ``base_url`` or ``TDC_URL``."""
        key, url = key_from_env(base_url)
        return cls(url, api_key=key, **kwargs)

    @property
    def uses_key(self) -> bool:
        return self._key is not None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def tokens(self) -> Tokens | None:
        if self._access is None or self._refresh is None:
            return None
        return Tokens(self._access, self._refresh)

    def _set_tokens(self, body: JSON) -> Tokens:
        tokens = Tokens(access=body["access"], refresh=body["refresh"])
        self._access, self._refresh = tokens.access, tokens.refresh
        if self._on_tokens is not None:
            self._on_tokens(tokens)
        return tokens

    async def register(self, email: str, password: str) -> JSON:
        body = {"primary_email": email, "password": password}
        return await self._call("POST", "/auth/users/register/", json=body, auth=False)

    async def login(self, email: str, password: str) -> Tokens:
        if self._key is not None:
            raise key_client_error("login")
        body = {"primary_email": email, "password": password}
        return self._set_tokens(
            await self._call("POST", "/auth/tokens/obtain/", json=body, auth=False)
        )

    async def refresh(self) -> Tokens:
        if self._key is not None:
            raise key_client_error("refresh")
        if self._refresh is None:
            raise TinydevcrmError(None, "not_logged_in", "there is no refresh token: log in first")
        body = {"refresh": self._refresh}
        return self._set_tokens(
            await self._call("POST", "/auth/tokens/refresh/", json=body, auth=False)
        )

    async def logout(self) -> None:
        if self._key is not None:
            raise key_client_error("logout (revoke a key with DELETE /auth/keys/{id}/)")
        if self._refresh is not None:
            await self._call(
                "POST", "/auth/tokens/blacklist/", json={"refresh": self._refresh}, auth=False
            )
        self._access = self._refresh = None

    async def me(self) -> JSON:
        return await self._call("GET", "/auth/users/me/")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[Tuple[str, str]] | None = None,
        json: Any = None,
    ) -> Any:
        """Any JSON route (``GET /tables/``, ``POST /views/{name}/refresh/``, ...): the parsed
        body, ``None`` when empty; refreshes an expired token once, raises
        :class:`TinydevcrmError`."""
        return await self._call(method, path, params=list(params) if params else None, json=json)

    async def _refresh_after(self, stale: str | None) -> None:
        async with self._refresh_lock:
            if self._access == stale:
                await self.refresh()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: List[Tuple[str, str]] | None = None,
        json: Any = None,
        auth: bool = True,
    ) -> Any:
        refreshed = False
        tries = 0
        while True:
            tries += 1
            token = self._key or self._access
            headers = {"Authorization": f"Bearer {token}"} if auth and token else {}
            try:
                response = await self._http.request(
                    method,
                    path,
                    params=tuple(params) if params else None,
                    json=json,
                    headers=headers,
                )
            except httpx.TransportError as e:
                raise TinydevcrmConnectionError(f"{method} {self.base_url}{path}: {e}") from e
            if response.is_success:
                return response.json() if response.content else None
            wait = retry_wait(response, method, tries)
            if wait is not None:
                await asyncio.sleep(wait)
                continue
            error = TinydevcrmError.from_response(response)
            if (
                not refreshed
                and auth
                and self._key is None
                and error.code == "token_expired"
                and self._refresh is not None
            ):
                refreshed = True
                await self._refresh_after(token)
                continue
            raise error

    async def listen(
        self,
        channel_id: str,
        *,
        last_event_id: int | None = None,
        read_timeout: float = 60.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        on_reconnect: Callable[[float, BaseException | None], None] | None = None,
    ) -> AsyncIterator[Event]:
        """The events of a channel, as :meth:`tinydevcrm.Client.listen` (same resumption,
        refresh, backoff and errors), as an async generator."""
        state = Resume(last_event_id, initial_backoff, max_backoff)
        path = f"/channels/{channel_id}/listen/"
        timeout = httpx.Timeout(10.0, read=read_timeout)
        while True:
            token = self._key or self._access
            error: BaseException | None = None
            expired = False
            try:
                async with aconnect_sse(
                    self._http, "GET", path, headers=state.headers(token), timeout=timeout
                ) as source:
                    response = source.response
                    if not response.is_success:
                        await response.aread()
                        problem = TinydevcrmError.from_response(response)
                        expired = state.refused(
                            problem, self._key is None and self._refresh is not None
                        )
                        error = None if expired else problem
                    else:
                        state.connected()
                        # Closed here, not whenever the garbage collector gets to it, when this
                        # loop breaks or our caller stops iterating.
                        events = source.aiter_sse()
                        try:
                            async for sse in events:
                                event = state.event(sse)
                                if event is None:
                                    continue
                                verdict = state.accept(event)
                                if verdict == EXPIRED:
                                    expired = True
                                    break
                                if verdict == YIELD:
                                    yield event
                        finally:
                            await events.aclose()
            except httpx.TransportError as e:
                error = e
            if expired:
                if self._key is not None:
                    raise key_expired_stream()
                await self._refresh_after(token)
                continue
            delay = state.delay(error)
            if on_reconnect is not None:
                on_reconnect(delay, error)
            await asyncio.sleep(delay)
