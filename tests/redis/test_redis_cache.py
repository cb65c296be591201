"""RedisTokenCache against a real redis-server: one POST for many clients, the entry's
lifetime, encryption, invalidation, and every fault turning into a direct fetch."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest
from cryptography.fernet import Fernet
from tests.support import async_token_client, client_environ, token_client

from ccflow import AsyncTokenClient, ConfigurationError, TokenClient
from ccflow._core.shared_cache import ENTRY_PREFIX
from ccflow.authority import Authority
from ccflow.redis import RedisTokenCache

if TYPE_CHECKING:
    from tests.support import RedisServer


class Later:
    """Unix time plus an offset the test moves, to make a client's token due for refresh."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _stored(server: RedisServer) -> list[bytes]:
    """Every token entry key in the server (locks excluded)."""
    keys = server.client().keys("ccflow:v1:token:*")
    return [k for k in keys if not k.endswith(b":lock")]


@pytest.fixture
def quick() -> dict[str, float]:
    """Options that keep fault tests short."""
    return {"socket_timeout": 0.3, "retry_after": 0.2, "lock_timeout": 1.0}


def test_clients_sharing_redis_make_one_post(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    first = token_client(authority, RedisTokenCache(redis_server.url))
    second = token_client(authority, RedisTokenCache(redis_server.url))
    token = first.get_token(scope)
    assert second.get_token(scope) == token
    assert authority.hits["token"] == 1


@pytest.mark.anyio
async def test_async_clients_sharing_redis_make_one_post(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    caches = [RedisTokenCache(redis_server.url) for _ in range(2)]
    first, second = (async_token_client(authority, cache) for cache in caches)
    token = await first.get_token(scope)
    assert await second.get_token(scope) == token
    assert authority.hits["token"] == 1
    for cache in caches:
        await cache.aclose()


def test_threads_of_many_clients_make_one_post(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    clients = [token_client(authority, RedisTokenCache(redis_server.url)) for _ in range(4)]
    barrier = threading.Barrier(16)
    tokens: list[str] = []

    def ask(client: TokenClient) -> None:
        barrier.wait()
        tokens.append(client.get_token(scope).token)

    threads = [threading.Thread(target=ask, args=(c,)) for c in clients for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert len(set(tokens)) == 1
    assert len(tokens) == 16
    assert authority.hits["token"] == 1


def test_an_entry_lives_in_redis_as_long_as_its_token(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    token_client(authority, RedisTokenCache(redis_server.url)).get_token(scope)
    (key,) = _stored(redis_server)
    lifetime_ms = redis_server.client().pttl(key)
    assert 3_590_000 < lifetime_ms <= 3_599_000


def test_the_entry_lifetime_does_not_depend_on_the_writers_clock(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    ahead = token_client(
        authority, RedisTokenCache(redis_server.url), clock=lambda: time.time() + 3600
    )
    ahead.get_token(scope)
    (key,) = _stored(redis_server)
    assert 3_590_000 < redis_server.client().pttl(key) <= 3_599_000


def test_a_reader_whose_clock_is_behind_uses_the_entry(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    writer = token_client(authority, RedisTokenCache(redis_server.url))
    behind = token_client(
        authority, RedisTokenCache(redis_server.url), clock=lambda: time.time() - 600
    )
    assert behind.get_token(scope) == writer.get_token(scope)
    assert authority.hits["token"] == 1


def test_a_reader_whose_clock_is_ahead_fetches_its_own_and_shares_it(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    writer = token_client(authority, RedisTokenCache(redis_server.url))
    writer.get_token(scope)
    ahead = token_client(
        authority, RedisTokenCache(redis_server.url), clock=lambda: time.time() + 3500
    )  # for it the token is past its refresh time
    assert ahead.get_token(scope) != writer.get_token(scope)
    assert authority.hits["token"] == 2
    late = token_client(authority, RedisTokenCache(redis_server.url))
    assert late.get_token(scope) == ahead.get_token(scope)  # the newer entry replaced the old


def test_encrypted_entries_reveal_no_token(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    key = Fernet.generate_key()
    token = token_client(
        authority, RedisTokenCache(redis_server.url, encryption_key=key)
    ).get_token(scope)
    (name,) = _stored(redis_server)
    raw = redis_server.client().get(name)
    assert raw is not None
    assert raw.startswith(ENTRY_PREFIX)
    assert token.token.encode() not in raw
    other = token_client(authority, RedisTokenCache(redis_server.url, encryption_key=key))
    assert other.get_token(scope) == token
    assert authority.hits["token"] == 1


def test_plain_entries_hold_the_token_in_clear(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    # What "no key" means (docs/scaling.md): anyone who can read Redis can use the token.
    token = token_client(authority, RedisTokenCache(redis_server.url)).get_token(scope)
    (name,) = _stored(redis_server)
    assert token.token.encode() in (redis_server.client().get(name) or b"")


@pytest.mark.parametrize("reader_key", [None, "other"])
def test_an_entry_a_reader_cannot_decrypt_is_replaced(
    authority: Authority, redis_server: RedisServer, scope: str, reader_key: str | None
) -> None:
    writer = RedisTokenCache(redis_server.url, encryption_key=Fernet.generate_key())
    token_client(authority, writer).get_token(scope)
    key = Fernet.generate_key() if reader_key else None
    reader = token_client(authority, RedisTokenCache(redis_server.url, encryption_key=key))
    token = reader.get_token(scope)
    assert authority.hits["token"] == 2
    again = token_client(authority, RedisTokenCache(redis_server.url, encryption_key=key))
    assert again.get_token(scope) == token
    assert authority.hits["token"] == 2


@pytest.mark.parametrize(
    "foreign",
    [
        b"ccflow-entry-v0:{}",  # another ccflow version's format
        ENTRY_PREFIX + b"{not json",
        ENTRY_PREFIX + b'{"key":"elsewhere","token":"t","token_type":"Bearer"}',
        b"\x00\xff garbage",
    ],
)
def test_a_foreign_or_corrupt_entry_is_ignored_and_replaced(
    authority: Authority, redis_server: RedisServer, scope: str, foreign: bytes
) -> None:
    first = token_client(authority, RedisTokenCache(redis_server.url))
    first.get_token(scope)
    (name,) = _stored(redis_server)
    redis_server.client().set(name, foreign)
    token = token_client(authority, RedisTokenCache(redis_server.url)).get_token(scope)
    assert authority.hits["token"] == 2
    stored = redis_server.client().get(name) or b""
    assert stored != foreign
    assert token.token.encode() in stored


def test_a_key_of_another_type_is_replaced(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    token_client(authority, RedisTokenCache(redis_server.url)).get_token(scope)
    (name,) = _stored(redis_server)
    raw = redis_server.client()
    raw.delete(name)
    raw.rpush(name, b"x")
    token = token_client(authority, RedisTokenCache(redis_server.url)).get_token(scope)
    assert token.token.encode() in (raw.get(name) or b"")


@pytest.mark.anyio
async def test_forgetting_a_token_under_a_key_of_another_type_is_no_outage(
    authority: Authority, redis_server: RedisServer, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RedisTokenCache(redis_server.url)
    client = token_client(authority, cache)
    token = client.get_token(scope)
    key = client._key((scope,))
    raw = redis_server.client()
    raw.delete(key.shared())
    raw.rpush(key.shared(), b"x")
    with caplog.at_level(logging.WARNING, logger="ccflow"):
        cache.forget(key, token)
        await cache.aforget(key, token)
    assert [r for r in caplog.records if "unavailable" in r.getMessage()] == []
    assert raw.type(key.shared()) == b"list"
    await cache.aclose()


def test_invalidate_removes_the_shared_entry(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    client = token_client(authority, RedisTokenCache(redis_server.url))
    token = client.get_token(scope)
    client.invalidate(token, scope)
    assert _stored(redis_server) == []
    other = token_client(authority, RedisTokenCache(redis_server.url))
    assert other.get_token(scope) != token
    assert authority.hits["token"] == 2


@pytest.mark.anyio
async def test_async_invalidate_removes_the_shared_entry(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    cache = RedisTokenCache(redis_server.url)
    client = async_token_client(authority, cache)
    token = await client.get_token(scope)
    client.invalidate(token, scope)
    fresh = await client.get_token(scope)  # never the refused token, even before it is gone
    assert fresh != token
    for _ in range(100):
        if (redis_server.client().get(_stored(redis_server)[0]) or b"").find(
            token.token.encode()
        ) < 0:
            break
        await _pause()
    assert token.token.encode() not in (redis_server.client().get(_stored(redis_server)[0]) or b"")
    await cache.aclose()


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.01)


def test_invalidate_keeps_an_entry_another_process_replaced(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    mine = token_client(authority, RedisTokenCache(redis_server.url))
    token = mine.get_token(scope)
    other_cache = RedisTokenCache(redis_server.url)
    other = token_client(authority, other_cache)
    other.get_token(scope)
    other.invalidate(token, scope)  # the other process was refused this token, fetched anew
    newer = other.get_token(scope)
    mine.cache.discard(mine._key((scope,)), token)
    mine.cache.forget(mine._key((scope,)), token)  # a stale removal: the newer entry stays
    assert token_client(authority, RedisTokenCache(redis_server.url)).get_token(scope) == newer


def test_a_hit_does_not_ask_redis(
    authority: Authority, redis_server: RedisServer, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = token_client(authority, RedisTokenCache(redis_server.url))
    token = client.get_token(scope)
    redis_server.kill()
    with caplog.at_level(logging.WARNING, logger="ccflow"):
        assert client.get_token(scope) is token
    assert caplog.records == []


def test_redis_down_from_the_start_costs_one_warning(
    authority: Authority, scope: str, caplog: pytest.LogCaptureFixture, quick: dict[str, float]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed: nothing listens
    later = Later()
    client = token_client(
        authority, RedisTokenCache(f"redis://127.0.0.1:{port}/0", **quick), clock=later
    )
    with caplog.at_level(logging.WARNING, logger="ccflow"):
        for _ in range(3):
            client.get_token(scope)
            later.offset += 3500  # past the refresh time: the next call asks the cache again
            time.sleep(0.25)  # past retry_after: Redis is tried again each time
    assert authority.hits["token"] == 3
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert "ConnectionError" in warnings[0].getMessage()


def test_redis_killed_then_restarted_empty_is_used_again(
    authority: Authority,
    redis_server: RedisServer,
    scope: str,
    caplog: pytest.LogCaptureFixture,
    quick: dict[str, float],
) -> None:
    later = Later()
    client = token_client(authority, RedisTokenCache(redis_server.url, **quick), clock=later)
    client.get_token(scope)
    redis_server.kill()
    with caplog.at_level(logging.INFO, logger="ccflow"):
        later.offset += 3500  # past the refresh time: the client asks the cache again
        client.get_token(scope)
        assert authority.hits["token"] == 2
        redis_server.start()  # empty: nothing persisted
        time.sleep(0.25)
        later.offset += 3500
        token = client.get_token(scope)
    assert authority.hits["token"] == 3
    other = token_client(authority, RedisTokenCache(redis_server.url), clock=later)
    assert other.get_token(scope) == token
    assert authority.hits["token"] == 3  # shared again
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unavailable" in m for m in messages) == 1
    assert sum("answers again" in m for m in messages) == 1


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def test_a_redis_that_never_answers_costs_at_most_the_socket_timeout(
    authority: Authority, silent_server: int, scope: str, quick: dict[str, float]
) -> None:
    cache = RedisTokenCache(f"redis://127.0.0.1:{silent_server}/0", **quick)
    started = time.monotonic()
    assert token_client(authority, cache).get_token(scope).token
    assert time.monotonic() - started < 2.0
    started = time.monotonic()
    token_client(authority, cache).get_token(scope)  # within retry_after: Redis is not asked
    assert time.monotonic() - started < 0.2


def test_a_server_answering_garbage_is_an_outage(
    authority: Authority, scope: str, quick: dict[str, float]
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def answer() -> None:
        for _ in range(4):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    cache = RedisTokenCache(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", **quick)
    try:
        assert token_client(authority, cache).get_token(scope).token
    finally:
        listener.close()


def test_a_bad_encryption_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Fernet") as caught:
        RedisTokenCache("redis://127.0.0.1:1/0", encryption_key="not a key")
    assert caught.value.setting == "encryption_key"


def test_a_url_that_is_not_redis_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Redis URL"):
        RedisTokenCache("http://127.0.0.1:1/0")


def test_a_password_that_breaks_the_url_never_reaches_the_error() -> None:
    # An unescaped "/" in the password (Azure Cache for Redis keys are base64) made redis-py
    # quote what came before it: "Port could not be cast to integer value as 's3cr'".
    with pytest.raises(ConfigurationError, match="percent-encode") as caught:
        RedisTokenCache("redis://:s3cr/etPass@127.0.0.1:6390/2")
    assert "s3cr" not in str(caught.value)


def test_repr_names_the_server_but_never_the_password() -> None:
    cache = RedisTokenCache("redis://app:hunter2@127.0.0.1:6390/2")
    assert "hunter2" not in repr(cache)
    assert "127.0.0.1:6390/2" in repr(cache)


@pytest.mark.anyio
@pytest.mark.parametrize("face", ["sync", "async"])
async def test_a_client_from_env_closes_the_redis_cache_it_made(
    authority: Authority, redis_server: RedisServer, scope: str, face: str
) -> None:
    import redis

    environ = {**client_environ(authority), "CCFLOW_TOKEN_CACHE": redis_server.url}
    with redis.Redis.from_url(redis_server.url) as admin:
        before = len(admin.client_list())
        if face == "sync":
            http = httpx.Client(transport=authority.transport())
            with TokenClient.from_env(environ=environ, http_client=http) as client:
                client.get_token(scope)
        else:
            http_async = httpx.AsyncClient(transport=authority.transport())
            async with AsyncTokenClient.from_env(
                environ=environ, http_client=http_async
            ) as aclient:
                await aclient.get_token(scope)
        assert len(admin.client_list()) == before  # its connections are gone
