"""The synchronous client: auth with transparent token refresh, tables, views, jobs, channels."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Mapping,
    Sequence,
    Tuple,
    Union,
)

import httpx
from httpx_sse import connect_sse

from . import _data
from ._data import UploadData
from ._errors import TinydevcrmConnectionError, TinydevcrmError
from ._listen import EXPIRED, YIELD, Resume
from ._sse import Event

if TYPE_CHECKING:
    import pandas
    import pyarrow

#: A JSON object as the API answers it.
JSON = Dict[str, Any]

#: One filter's value: ``"op.value"`` in the API's syntax (``"eq.2026-02"``, ``"gte.10"``,
#: ``"in.(a,b)"``, ``"is.null"``), or a plain number or boolean meaning ``eq``, or ``None``
#: meaning ``is.null``.
FilterValue = Union[str, int, float, bool, None]
#: Filters by column: a mapping, or pairs when one column takes several filters.
Filters = Union[Mapping[str, FilterValue], Sequence[Tuple[str, FilterValue]]]
#: Column names, as a list or already comma-separated (``"a.desc.nullslast,b"`` for ``order``).
Columns = Union[str, Sequence[str]]

#: What every API key starts with.
KEY_PREFIX = "tdc_"
#: The environment variable :meth:`Client.from_env` reads the key from.
KEY_ENV = "TDC_KEY"
#: A GET answered ``429`` is sent again after its ``Retry-After`` when that is at most this
#: many seconds, up to :data:`MAX_TRIES` times in all; anything else raises at once.
MAX_RETRY_AFTER = 60.0
MAX_TRIES = 3

_OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "like", "ilike", "in", "is")


@dataclass(frozen=True)
class Tokens:
    """A session's token pair. The refresh token rotates: only the newest one is good."""

    access: str
    refresh: str


def _filter_params(filters: Filters | None) -> List[Tuple[str, str]]:
    if not filters:
        return []
    items: Iterable[Tuple[str, FilterValue]] = (
        filters.items() if isinstance(filters, Mapping) else filters
    )
    out = []
    for column, value in items:
        if value is None:
            text = "is.null"
        elif isinstance(value, bool):
            text = f"eq.{'true' if value else 'false'}"
        elif isinstance(value, (int, float)):
            text = f"eq.{value}"
        elif isinstance(value, str):
            op = value.split(".", 1)[0]
            if "." not in value or op not in _OPERATORS:
                raise ValueError(
                    f"filter on {column!r}: write it as 'op.value' with op one of "
                    f"{', '.join(_OPERATORS)} (e.g. 'eq.{value}'), not {value!r}"
                )
            text = value
        else:
            raise TypeError(f"filter on {column!r}: unsupported value {value!r}")
        out.append((column, text))
    return out


def _joined(columns: Columns | None) -> str | None:
    if columns is None:
        return None
    return columns if isinstance(columns, str) else ",".join(columns)


def _read_params(
    filters: Filters | None,
    order: Columns | None,
    select: Columns | None,
    limit: int | None,
    cursor: str | None = None,
    fmt: str | None = None,
) -> List[Tuple[str, str]]:
    params = _filter_params(filters)
    for key, value in (
        ("order", _joined(order)),
        ("select", _joined(select)),
        ("limit", None if limit is None else str(limit)),
        ("cursor", cursor),
        ("format", fmt),
    ):
        if value is not None:
            params.append((key, value))
    return params


def check_key(api_key: str) -> str:
    """``api_key`` when it looks like a key; a ``ValueError`` that never repeats it otherwise."""
    if (
        not api_key.startswith(KEY_PREFIX)
        or len(api_key) > 256
        or not all(33 <= ord(c) <= 126 for c in api_key)
    ):
        raise ValueError(f"api_key is not an API key (they start with {KEY_PREFIX!r})")
    return api_key


def key_from_env(base_url: str | None) -> Tuple[str, str]:
    """``(key, url)`` from ``TDC_KEY`` and ``base_url`` or ``TDC_URL`` (both must be set)."""
    key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise ValueError(f"{KEY_ENV} is not set")
    url = base_url or os.environ.get("TDC_URL") or None
    if url is None:
        raise ValueError("give base_url or set TDC_URL")
    return check_key(key), url


def retry_wait(response: httpx.Response, method: str, tries: int) -> float | None:
    """Seconds to wait before sending again a request answered ``429``, or ``None`` to raise:
    only GETs (a POST may have had effects), only for a ``Retry-After`` in seconds of at most
    :data:`MAX_RETRY_AFTER`, and only :data:`MAX_TRIES` times in all."""
    if response.status_code != 429 or method.upper() != "GET" or tries >= MAX_TRIES:
        return None
    try:
        wait = float(int(response.headers.get("retry-after", "").strip()))
    except ValueError:
        return None
    return wait if 0 <= wait <= MAX_RETRY_AFTER else None


def key_client_error(what: str) -> TinydevcrmError:
    return TinydevcrmError(
        None,
        "api_key_client",
        f"{what} is for login sessions: this client uses an API key (make a Client without "
        "api_key to log in)",
    )


class Client:
    """A client of one tinydevcrm server.

    >>> client = Client("http://localhost:8000")
    >>> client.login("me@example.com", "password")          # doctest: +SKIP
    >>> client.tables.upload("calls", "sample.parquet")     # doctest: +SKIP

    The access token is refreshed transparently: a request answered ``401 token_expired`` is
    retried once after ``POST /auth/tokens/refresh/``. The refresh token rotates; pass
    ``on_tokens`` to keep the newest pair somewhere (it is called after every login and
    refresh). One client may be shared by threads: one refresh runs at a time, since presenting
    a refresh token twice revokes the session.

    With ``api_key="tdc_..."`` every request carries the key (``Authorization: Bearer``) instead
    of a session: nothing is refreshed (an expired key raises ``key_expired``), and ``login``,
    ``refresh`` and ``logout`` raise (``api_key_client``). :meth:`from_env` reads the key from
    ``TDC_KEY``; a plain ``Client(...)`` never looks at the environment.

    A GET answered ``429`` (a key's rate limit, the server's admission) is sent again after
    ``Retry-After`` seconds when that is at most 60, three times in all; other requests raise.
    """

    def __init__(
        self,
        base_url: str,
        *,
        access_token: str | None = None,
        refresh_token: str | None = None,
        timeout: Union[float, httpx.Timeout] = httpx.Timeout(120.0, connect=10.0),
        on_tokens: Callable[[Tokens], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        api_key: str | None = None,
    ) -> None:
        if api_key is not None and (access_token is not None or refresh_token is not None):
            raise ValueError("give either api_key or session tokens, not both")
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._key = None if api_key is None else check_key(api_key)
        self._access = access_token
        self._refresh = refresh_token
        self._on_tokens = on_tokens
        self._refresh_lock = threading.Lock()
        self.tables = Tables(self)
        self.views = Views(self)
        self.jobs = Jobs(self)
        self.channels = Channels(self)
        self.keys = Keys(self)

    @classmethod
    def from_env(cls, base_url: str | None = None, **kwargs: Any) -> "Client":
        """A client on the API key in ``TDC_KEY``, at ``base_url`` or ``TDC_URL``: for a
        service whose key is given in its environment. Raises ``ValueError`` when either is
        missing."""
        key, url = key_from_env(base_url)
        return cls(url, api_key=key, **kwargs)

    @property
    def uses_key(self) -> bool:
        """Whether requests carry an API key rather than a session's token."""
        return self._key is not None

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ------------------------------------------------------------------------------

    @property
    def tokens(self) -> Tokens | None:
        """The current token pair, ``None`` before a login."""
        if self._access is None or self._refresh is None:
            return None
        return Tokens(self._access, self._refresh)

    def _set_tokens(self, body: JSON) -> Tokens:
        tokens = Tokens(access=body["access"], refresh=body["refresh"])
        self._access, self._refresh = tokens.access, tokens.refresh
        if self._on_tokens is not None:
            self._on_tokens(tokens)
        return tokens

    def register(self, email: str, password: str) -> JSON:
        """Creates a user: ``{"id", "primary_email", "created_at"}`` (409 ``email_taken``)."""
        body = {"primary_email": email, "password": password}
        return self._json("POST", "/auth/users/register/", json=body, auth=False)

    def login(self, email: str, password: str) -> Tokens:
        """Obtains a token pair, which the client then uses."""
        if self._key is not None:
            raise key_client_error("login")
        body = {"primary_email": email, "password": password}
        return self._set_tokens(self._json("POST", "/auth/tokens/obtain/", json=body, auth=False))

    def refresh(self) -> Tokens:
        """Exchanges the refresh token for a new pair now (requests also do it when needed)."""
        if self._key is not None:
            raise key_client_error("refresh")
        if self._refresh is None:
            raise TinydevcrmError(None, "not_logged_in", "there is no refresh token: log in first")
        body = {"refresh": self._refresh}
        return self._set_tokens(self._json("POST", "/auth/tokens/refresh/", json=body, auth=False))

    def logout(self) -> None:
        """Revokes the session on the server (its tokens and open streams stop working)."""
        if self._key is not None:
            raise key_client_error("logout (revoke a key with client.keys.revoke)")
        if self._refresh is not None:
            self._request(
                "POST", "/auth/tokens/blacklist/", json={"refresh": self._refresh}, auth=False
            )
        self._access = self._refresh = None

    def me(self) -> JSON:
        """The logged-in user, with its storage use and quota."""
        return self._json("GET", "/auth/users/me/")

    def _refresh_after(self, stale: str | None) -> None:
        """Refreshes unless another thread already replaced the access token ``stale``."""
        with self._refresh_lock:
            if self._access == stale:
                self.refresh()

    # -- requests --------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: List[Tuple[str, str]] | None = None,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        upload: _data.Payload | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        refreshed = False
        tries = 0
        while True:
            tries += 1
            token = self._key or self._access
            headers = {"Authorization": f"Bearer {token}"} if auth and token else {}
            body = upload.open() if upload is not None else None
            files = (
                {"file": (upload.filename, body, "application/vnd.apache.parquet")}
                if upload is not None and body is not None
                else None
            )
            try:
                response = self._http.request(
                    method,
                    path,
                    params=tuple(params) if params else None,
                    json=json,
                    data=form,
                    files=files,
                    headers=headers,
                )
            except httpx.TransportError as e:
                raise TinydevcrmConnectionError(f"{method} {self.base_url}{path}: {e}") from e
            finally:
                if upload is not None and body is not None:
                    upload.done(body)
            if response.is_success:
                return response
            wait = retry_wait(response, method, tries)
            if wait is not None:
                time.sleep(wait)
                continue
            error = TinydevcrmError.from_response(response)
            if (
                not refreshed
                and auth
                and self._key is None
                and error.status == 401
                and error.code == "token_expired"
                and self._refresh is not None
            ):
                refreshed = True
                self._refresh_after(token)
                continue
            raise error

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return response.json() if response.content else None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[Tuple[str, str]] | None = None,
        json: Any = None,
    ) -> Any:
        """Any JSON route the client does not wrap (``/channels/{id}/webhooks/``, indexes, ...),
        with the same auth, refresh and errors; answers the parsed body (``None`` when empty)."""
        return self._json(method, path, params=list(params) if params else None, json=json)

    # -- channels' streams -----------------------------------------------------------------

    def listen(
        self,
        channel_id: str,
        *,
        last_event_id: int | None = None,
        read_timeout: float = 60.0,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        on_reconnect: Callable[[float, BaseException | None], None] | None = None,
    ) -> Iterator[Event]:
        """The events of a channel, as they come, for as long as the caller iterates.

        A dropped connection (a server restart, a network failure) is retried with
        exponential backoff from ``initial_backoff`` up to ``max_backoff`` seconds, and
        resumes with ``Last-Event-ID``: the events in between are replayed and every event is
        yielded once. An expired access token is refreshed. ``last_event_id`` starts after a
        known event (events after it are replayed first). ``read_timeout`` must exceed the
        server's heartbeat period (15 s): a silent connection is taken for a dead one.
        ``on_reconnect(delay, error)`` is called before each wait (``error`` is ``None``
        when the server ended the stream itself).

        With an API key (sent as a header) nothing is refreshed: the key's expiry raises
        ``key_expired``, its revocation ``token_revoked``.

        Yields ``refresh`` events, and ``reset`` when ``Last-Event-ID`` named an event the
        server no longer has (reload the view, then carry on). Raises
        :class:`TinydevcrmError` when the session is revoked (``token_revoked``) or expired,
        and for answers that retrying cannot change (404, 400, 401 other than an expired
        token).
        """
        state = Resume(last_event_id, initial_backoff, max_backoff)
        path = f"/channels/{channel_id}/listen/"
        timeout = httpx.Timeout(10.0, read=read_timeout)
        while True:
            token = self._key or self._access
            error: BaseException | None = None
            expired = False
            try:
                with connect_sse(
                    self._http, "GET", path, headers=state.headers(token), timeout=timeout
                ) as source:
                    response = source.response
                    if not response.is_success:
                        response.read()
                        problem = TinydevcrmError.from_response(response)
                        expired = state.refused(
                            problem, self._key is None and self._refresh is not None
                        )
                        error = None if expired else problem
                    else:
                        state.connected()
                        for sse in source.iter_sse():
                            event = state.event(sse)
                            if event is None:
                                continue
                            verdict = state.accept(event)
                            if verdict == EXPIRED:
                                expired = True
                                break
                            if verdict == YIELD:
                                yield event
            except httpx.TransportError as e:
                error = e
            if expired:
                if self._key is not None:
                    raise key_expired_stream()
                self._refresh_after(token)
                continue
            delay = state.delay(error)
            if on_reconnect is not None:
                on_reconnect(delay, error)
            time.sleep(delay)


class _Relation:
    """Reading rows, shared by tables and views (``/tables/{name}/rows/``, ``/views/...``)."""

    _prefix = ""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _path(self, name: str, rest: str = "") -> str:
        return f"/{self._prefix}/{name}/{rest}"

    def list(self) -> List[JSON]:
        return self._client._json("GET", f"/{self._prefix}/")

    def show(self, name: str) -> JSON:
        return self._client._json("GET", self._path(name))

    def drop(self, name: str, *, cascade: bool = False) -> None:
        params = [("cascade", "true")] if cascade else None
        self._client._request("DELETE", self._path(name), params=params)

    def rows(
        self,
        name: str,
        *,
        filters: Filters | None = None,
        order: Columns | None = None,
        select: Columns | None = None,
        limit: int | None = None,
    ) -> List[JSON]:
        """One page of rows as dicts (``limit`` defaults to the server's 100, at most 10,000).

        JSON types: ``numeric`` values are strings, timestamps RFC 3339 text; for typed
        columns read :meth:`arrow` or :meth:`dataframe`.
        """
        page = self.rows_page(name, filters=filters, order=order, select=select, limit=limit)
        return page["rows"]

    def rows_page(
        self,
        name: str,
        *,
        filters: Filters | None = None,
        order: Columns | None = None,
        select: Columns | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> JSON:
        """``{"rows", "next_cursor"}``: pass ``next_cursor`` back as ``cursor`` for the next page."""
        params = _read_params(filters, order, select, limit, cursor)
        return self._client._json("GET", self._path(name, "rows/"), params=params)

    def iter_rows(
        self,
        name: str,
        *,
        filters: Filters | None = None,
        order: Columns | None = None,
        select: Columns | None = None,
        page_size: int = 1000,
    ) -> Iterator[JSON]:
        """Every row, page after page (keyset cursors: no row is skipped or repeated)."""
        cursor: str | None = None
        while True:
            page = self.rows_page(
                name, filters=filters, order=order, select=select, limit=page_size, cursor=cursor
            )
            yield from page["rows"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def arrow(
        self,
        name: str,
        *,
        filters: Filters | None = None,
        order: Columns | None = None,
        select: Columns | None = None,
        limit: int | None = None,
    ) -> "pyarrow.Table":
        """The rows as a ``pyarrow.Table``, read from the server's Parquet export (all rows
        matching, or ``limit``), so column types are kept (needs pyarrow)."""
        params = _read_params(filters, order, select, limit, fmt="parquet")
        response = self._client._request("GET", self._path(name, "rows/"), params=params)
        return _data.read_parquet(response.content)

    def dataframe(
        self,
        name: str,
        *,
        filters: Filters | None = None,
        order: Columns | None = None,
        select: Columns | None = None,
        limit: int | None = None,
    ) -> "pandas.DataFrame":
        """The rows as a ``pandas.DataFrame``, through the Parquet export (needs pandas)."""
        return self.arrow(
            name, filters=filters, order=order, select=select, limit=limit
        ).to_pandas()

    def export(
        self,
        name: str,
        path: Union[str, "os.PathLike[str]"],
        *,
        format: Literal["parquet", "csv"] = "parquet",
        filters: Filters | None = None,
        order: Columns | None = None,
        select: Columns | None = None,
        limit: int | None = None,
    ) -> int:
        """Writes the export to ``path``; answers the number of bytes written."""
        params = _read_params(filters, order, select, limit, fmt=format)
        response = self._client._request("GET", self._path(name, "rows/"), params=params)
        with open(path, "wb") as f:
            return f.write(response.content)


class Tables(_Relation):
    """``/tables/``: upload Parquet (a file, bytes, a ``pyarrow.Table`` or a DataFrame), read rows."""

    _prefix = "tables"

    def upload(
        self,
        name: str,
        data: UploadData,
        *,
        mode: Literal["append", "replace"] | None = None,
        columns: Union[Mapping[str, str], Sequence[Mapping[str, str]]] | None = None,
        indexes: Sequence[Sequence[str]] | None = None,
        unique: Sequence[Sequence[str]] | None = None,
    ) -> JSON:
        """Creates table ``name`` from Parquet data, or with ``mode`` adds rows to it.

        Without ``mode``: ``POST /tables/create/``, answering the table's description;
        ``columns`` declares every column of the file with its type instead of the file's
        (``{"item": "text", "price": "numeric(12,2)"}``, or the API's list of
        ``{"column_name", "column_type"}``); ``indexes`` and ``unique`` are lists of column
        lists. With ``mode="append"`` or ``"replace"``: ``POST /tables/{name}/rows/``,
        answering ``{"table_name", "mode", "rows_written", "row_count"}``.

        A DataFrame or a pyarrow table is written to Parquet first (in memory, or a temporary
        file when large); a DataFrame's index is not uploaded.
        """
        if mode is not None and (columns is not None or indexes is not None or unique is not None):
            raise ValueError("columns, indexes and unique apply when creating a table (mode=None)")
        if mode not in (None, "append", "replace"):
            raise ValueError(f"mode must be 'append' or 'replace', not {mode!r}")
        payload = _data.payload(data, name)
        try:
            if mode is not None:
                return self._client._json(
                    "POST", self._path(name, "rows/"), form={"mode": mode}, upload=payload
                )
            form = {"table_name": name}
            if columns is not None:
                listed = (
                    [{"column_name": k, "column_type": v} for k, v in columns.items()]
                    if isinstance(columns, Mapping)
                    else [dict(c) for c in columns]
                )
                form["columns"] = _dumps(listed)
            if indexes is not None:
                form["indexes"] = _dumps([list(c) for c in indexes])
            if unique is not None:
                form["unique"] = _dumps([list(c) for c in unique])
            return self._client._json("POST", "/tables/create/", form=form, upload=payload)
        finally:
            payload.close()

    def insert(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        mode: Literal["append", "replace"] = "append",
    ) -> JSON:
        """Adds rows given as dicts (the JSON route): ``{"rows_written", "row_count", ...}``."""
        return self._client._json(
            "POST", self._path(name, "rows/"), params=[("mode", mode)], json=[dict(r) for r in rows]
        )


class Views(_Relation):
    """``/views/``: materialized views over your tables, refreshed on demand or by jobs."""

    _prefix = "views"

    def create(self, name: str, sql: str, *, unique_key: Sequence[str] | None = None) -> JSON:
        """Creates and fills a view from one ``SELECT``; answers its description."""
        body: JSON = {"view_name": name, "sql_query": sql}
        if unique_key is not None:
            body["unique_key"] = list(unique_key)
        return self._client._json("POST", "/views/create/", json=body)

    def refresh(self, name: str) -> JSON:
        """Refreshes now: the refresh record (``status`` ``refreshed`` or ``skipped``)."""
        return self._client._json("POST", self._path(name, "refresh/"))


class Jobs:
    """``/jobs/``: cron schedules that refresh a view."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        view_name: str,
        crontab_def: str,
        *,
        timezone: str | None = None,
        overlap: Literal["skip", "queue"] | None = None,
        retries: int | None = None,
        paused: bool | None = None,
    ) -> JSON:
        body: JSON = {"view_name": view_name, "crontab_def": crontab_def}
        for key, value in (
            ("timezone", timezone),
            ("overlap", overlap),
            ("retries", retries),
            ("paused", paused),
        ):
            if value is not None:
                body[key] = value
        return self._client._json("POST", "/jobs/create/", json=body)

    def list(self) -> List[JSON]:
        return self._client._json("GET", "/jobs/")

    def show(self, job_id: str) -> JSON:
        return self._client._json("GET", f"/jobs/{job_id}/")

    def runs(
        self, job_id: str, *, limit: int | None = None, before: str | None = None
    ) -> JSON:
        """``{"runs": [...], "next_cursor"}``, newest first; pass ``next_cursor`` as ``before``."""
        params = [(k, str(v)) for k, v in (("limit", limit), ("before", before)) if v is not None]
        return self._client._json("GET", f"/jobs/{job_id}/runs/", params=params)

    def update(self, job_id: str, **changes: Any) -> JSON:
        """``PATCH`` any of ``paused``, ``crontab_def``, ``timezone``, ``overlap``, ``retries``."""
        return self._client._json("PATCH", f"/jobs/{job_id}/", json=changes)

    def pause(self, job_id: str) -> JSON:
        return self.update(job_id, paused=True)

    def resume(self, job_id: str) -> JSON:
        return self.update(job_id, paused=False)

    def delete(self, job_id: str) -> None:
        self._client._request("DELETE", f"/jobs/{job_id}/")


class Channels:
    """``/channels/``: event streams of a view's refreshes (read them with ``Client.listen``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, *, job_id: str | None = None, view_name: str | None = None) -> JSON:
        """A channel on the view a job refreshes, or on a view: exactly one of the two."""
        if (job_id is None) == (view_name is None):
            raise ValueError("give exactly one of job_id and view_name")
        body = {"job_id": job_id} if job_id is not None else {"view_name": view_name}
        return self._client._json("POST", "/channels/create/", json=body)

    def list(self) -> List[JSON]:
        return self._client._json("GET", "/channels/")

    def show(self, channel_id: str) -> JSON:
        return self._client._json("GET", f"/channels/{channel_id}/")

    def delete(self, channel_id: str) -> None:
        self._client._request("DELETE", f"/channels/{channel_id}/")


class Keys:
    """``/auth/keys/``: API keys for dashboards and services. Only a login session manages
    keys: on a client with ``api_key`` these raise ``403 key_not_allowed``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        expires_at: Union[datetime, str, None] = None,
        rate_limit_per_minute: int | None = None,
    ) -> JSON:
        """A new key: ``{"id", "name", "prefix", "scopes", ..., "key"}``. ``key`` is in this
        answer only (the server keeps its hash): store it now. Scopes are
        ``views:read:<name>``, ``tables:read:<name>``, ``tables:append:<name>``,
        ``channels:listen:<id>``, ``views:refresh:<name>`` and ``*:read``; ``expires_at`` a
        timezone-aware ``datetime`` or RFC 3339 text."""
        if isinstance(scopes, str):
            raise TypeError("scopes is a list of scopes, not one string")
        body: JSON = {"name": name, "scopes": list(scopes)}
        if isinstance(expires_at, datetime):
            if expires_at.tzinfo is None:
                raise ValueError("expires_at must be timezone-aware")
            body["expires_at"] = expires_at.isoformat()
        elif expires_at is not None:
            body["expires_at"] = expires_at
        if rate_limit_per_minute is not None:
            body["rate_limit_per_minute"] = rate_limit_per_minute
        return self._client._json("POST", "/auth/keys/", json=body)

    def list(self) -> List[JSON]:
        """The keys, newest first (name, prefix, scopes, dates; never the key itself)."""
        return self._client._json("GET", "/auth/keys/")

    def revoke(self, key_id: str) -> None:
        """Revokes a key at once (every process refuses it; its streams end)."""
        self._client._request("DELETE", f"/auth/keys/{key_id}/")


def key_expired_stream() -> TinydevcrmError:
    """What a listener on a key raises when the server ends its stream as the key expired."""
    return TinydevcrmError(
        401, "key_expired", "the API key has expired (the stream ended); keys are not refreshed"
    )


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value)
