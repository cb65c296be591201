"""``ccflow token`` and its token cache: a loop of calls makes one POST; ``--no-cache``;
a wrong secret is never answered from the cache; ``CCFLOW_TOKEN_CACHE`` points it at Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import RedisServer

from ccflow.authority import AuthorityServer


@pytest.fixture
def server() -> Iterator[AuthorityServer]:
    with AuthorityServer() as running:
        yield running


def _run(
    server: AuthorityServer, *flags: str, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Run ``ccflow token`` for calc-client of ``server``, with ``variables`` set."""
    authority = server.authority
    app = authority.client("calc-client")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CCFLOW_"))}
    env.update(
        AZURE_CLIENT_ID=app.client_id,
        AZURE_TENANT_ID=authority.tenant_id,
        AZURE_AUTHORITY_HOST=server.url,
        AZURE_CLIENT_SECRET=app.secret,
    )
    env.update(variables)
    scope = authority.api("calc-api").default_scope
    return subprocess.run(
        [sys.executable, "-m", "ccflow", "token", "--scope", scope, *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _token(server: AuthorityServer, *flags: str, **variables: str) -> str:
    """The token ``ccflow token`` printed (it must exit 0)."""
    result = _run(server, *flags, **variables)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow
def test_a_loop_of_twenty_calls_makes_one_post(server: AuthorityServer) -> None:
    tokens = {_token(server) for _ in range(20)}
    assert len(tokens) == 1
    assert server.authority.hits["token"] == 1


def test_a_second_call_is_served_from_the_cache_file(
    server: AuthorityServer, tmp_path: Path
) -> None:
    assert _token(server) == _token(server)
    assert server.authority.hits["token"] == 1
    path = tmp_path / "xdg-cache" / "ccflow" / "tokens.json"
    assert path.stat().st_mode & 0o777 == 0o600


def test_no_cache_skips_the_cache(server: AuthorityServer, tmp_path: Path) -> None:
    _token(server, "--no-cache")
    _token(server, "--no-cache")
    assert server.authority.hits["token"] == 2
    assert not (tmp_path / "xdg-cache" / "ccflow").exists()


def test_a_wrong_secret_is_not_answered_from_the_cache(server: AuthorityServer) -> None:
    _token(server)
    result = _run(server, AZURE_CLIENT_SECRET="wrong")
    assert result.returncode == 1
    assert "AADSTS7000215" in result.stderr


def test_ccflow_token_cache_points_the_cli_at_redis(
    server: AuthorityServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    first = _token(server, CCFLOW_TOKEN_CACHE=redis_server.url)
    second = _token(server, CCFLOW_TOKEN_CACHE=redis_server.url)
    assert first == second
    assert server.authority.hits["token"] == 1
    assert not (tmp_path / "xdg-cache" / "ccflow").exists()  # Redis, not the file
