"""Register, log in, refresh transparently, log out; errors carry the server's problem."""

from __future__ import annotations

import time

import pytest

from conftest import ACCESS_TTL, PASSWORD, Server
from tinydevcrm import Client, TinydevcrmConnectionError, TinydevcrmError, Tokens


def test_a_registered_user_logs_in_and_sees_itself(server: Server, email: str) -> None:
    with Client(server.url) as c:
        user = c.register(email, PASSWORD)
        assert user["primary_email"] == email
        tokens = c.login(email, PASSWORD)
        assert isinstance(tokens, Tokens) and tokens == c.tokens
        me = c.me()
        assert me["id"] == user["id"] and me["primary_email"] == email


def test_an_expired_access_token_is_refreshed_once_and_the_request_retried(
    server: Server, email: str
) -> None:
    seen: list[Tokens] = []
    with Client(server.url, on_tokens=seen.append) as c:
        c.register(email, PASSWORD)
        first = c.login(email, PASSWORD)
        time.sleep(ACCESS_TTL + 1.5)
        assert c.me()["primary_email"] == email
        # One login and exactly one refresh, which rotated both tokens.
        assert len(seen) == 2
        assert c.tokens == seen[1]
        assert seen[1].access != first.access and seen[1].refresh != first.refresh
        # The old refresh token is spent: presenting it again is refused.
        with Client(server.url, access_token=first.access, refresh_token=first.refresh) as stale:
            with pytest.raises(TinydevcrmError) as e:
                stale.refresh()
        assert e.value.status == 401


def test_a_client_built_from_saved_tokens_works_without_logging_in(
    server: Server, client: Client
) -> None:
    saved = client.tokens
    assert saved is not None
    with Client(server.url, access_token=saved.access, refresh_token=saved.refresh) as again:
        assert again.me()["id"] == client.me()["id"]


def test_logout_revokes_the_session(server: Server, client: Client) -> None:
    saved = client.tokens
    assert saved is not None
    client.logout()
    assert client.tokens is None
    with Client(server.url, access_token=saved.access, refresh_token=saved.refresh) as stolen:
        with pytest.raises(TinydevcrmError) as e:
            stolen.me()
        assert (e.value.status, e.value.code) == (401, "token_revoked")
        with pytest.raises(TinydevcrmError) as e:
            stolen.refresh()
        assert (e.value.status, e.value.code) == (401, "token_revoked")


def test_a_wrong_password_raises_with_status_code_and_detail(server: Server, email: str) -> None:
    with Client(server.url) as c:
        c.register(email, PASSWORD)
        with pytest.raises(TinydevcrmError) as e:
            c.login(email, "not-the-password")
    err = e.value
    assert (err.status, err.code) == (401, "invalid_credentials")
    assert err.detail and err.problem["detail"] == err.detail and err.problem["status"] == 401
    assert "invalid_credentials" in str(err)


def test_registering_twice_is_a_conflict(server: Server, email: str) -> None:
    with Client(server.url) as c:
        c.register(email, PASSWORD)
        with pytest.raises(TinydevcrmError) as e:
            c.register(email, PASSWORD)
    assert (e.value.status, e.value.code) == (409, "email_taken")


def test_without_a_login_requests_are_refused_as_unauthenticated(server: Server) -> None:
    with Client(server.url) as c:
        with pytest.raises(TinydevcrmError) as e:
            c.tables.list()
    assert (e.value.status, e.value.code) == (401, "token_missing")


def test_an_unreachable_server_raises_a_connection_error() -> None:
    from conftest import free_port

    with Client(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(TinydevcrmConnectionError) as e:
            c.login("nobody@example.com", PASSWORD)
    assert isinstance(e.value, TinydevcrmError)
    assert e.value.status is None and e.value.code == "connection_failed"
    assert e.value.__cause__ is not None
