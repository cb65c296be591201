"""RedisTokenCache across real processes: N cold processes make one POST, and a lock holder
killed while holding the lock is taken over once the lock expires."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from tests.support import client_environ, token_client

from ccflow import TokenKey
from ccflow._core.shared_cache import lock_key
from ccflow.authority import Authority, AuthorityServer
from ccflow.redis import RedisTokenCache

if TYPE_CHECKING:
    from tests.support import RedisServer

# One cold process: a client from the environment (CCFLOW_TOKEN_CACHE included), one token.
_ONE_PROCESS = """
import sys
from ccflow import TokenClient
with TokenClient.from_env() as client:
    print(client.get_token(sys.argv[1]).token)
"""

# Takes the lock for a key, then hangs in the fetch until killed.
_HOLDER = """
import sys, time
from ccflow import TokenKey
from ccflow.redis import RedisTokenCache

cache = RedisTokenCache(sys.argv[1], lock_timeout=float(sys.argv[5]))
key = TokenKey(sys.argv[2], sys.argv[3], (sys.argv[4],))

def fetch():
    print("holding", flush=True)
    time.sleep(60)

cache.refill(key, time.time(), fetch)
"""


@pytest.mark.slow
def test_cold_processes_make_one_post(redis_server: RedisServer) -> None:
    with AuthorityServer() as server:
        authority = server.authority
        env = {
            **os.environ,
            **client_environ(authority, host=server.url),
            "CCFLOW_TOKEN_CACHE": redis_server.url,
        }
        scope = authority.api("calc-api").default_scope
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _ONE_PROCESS, scope], env=env, stdout=subprocess.PIPE
            )
            for _ in range(6)
        ]
        tokens = {p.communicate(timeout=60)[0].strip() for p in processes}
        assert all(p.returncode == 0 for p in processes)
        assert len(tokens) == 1
        assert authority.hits["token"] == 1


def test_a_lock_holder_killed_while_holding_the_lock_is_taken_over(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    client = token_client(authority, RedisTokenCache(redis_server.url, wait_timeout=10))
    key = TokenKey(client.token_endpoint, client.client_id, (scope,))
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, redis_server.url, key.token_endpoint,
         key.client_id, scope, "1.0"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"holding"
        assert redis_server.client().get(lock_key(key.shared())) is not None
    finally:
        holder.kill()
        holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()
    started = time.monotonic()
    assert client.get_token(scope).token
    waited = time.monotonic() - started
    assert authority.hits["token"] == 1
    assert 0.2 < waited < 5  # it waited for the dead holder's lock to expire, not forever


def test_a_waiter_gives_up_after_wait_timeout_and_fetches_alone(
    authority: Authority, redis_server: RedisServer, scope: str
) -> None:
    client = token_client(authority, RedisTokenCache(redis_server.url, wait_timeout=0.3))
    key = TokenKey(client.token_endpoint, client.client_id, (scope,))
    redis_server.client().set(lock_key(key.shared()), b"someone-slow", px=60_000)
    started = time.monotonic()
    assert client.get_token(scope).token
    assert time.monotonic() - started < 3
    assert redis_server.client().get(lock_key(key.shared())) == b"someone-slow"  # not ours
