"""``TokenClient.from_env()`` and the shared cache: CCFLOW_TOKEN_CACHE, CCFLOW_TOKEN_CACHE_KEY."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from ccflow import ConfigurationError, FileTokenCache, MemoryTokenCache, TokenClient
from ccflow._config import CACHE_VARIABLES
from ccflow.redis import RedisTokenCache

BASE = {"AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t", "AZURE_CLIENT_SECRET": "s"}


def test_the_variables_are_in_the_table() -> None:
    assert dict(CACHE_VARIABLES) == {
        "cache": "CCFLOW_TOKEN_CACHE",
        "encryption_key": "CCFLOW_TOKEN_CACHE_KEY",
    }


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380/1", "unix:///run/redis.sock"]
)
def test_ccflow_token_cache_gives_a_redis_cache(url: str) -> None:
    client = TokenClient.from_env(environ={**BASE, "CCFLOW_TOKEN_CACHE": url})
    assert isinstance(client.cache, RedisTokenCache)
    assert "encrypted=False" in repr(client.cache)


def test_ccflow_token_cache_key_encrypts() -> None:
    key = Fernet.generate_key().decode()
    environ = {**BASE, "CCFLOW_TOKEN_CACHE": "redis://h/0", "CCFLOW_TOKEN_CACHE_KEY": key}
    assert "encrypted=True" in repr(TokenClient.from_env(environ=environ).cache)


def test_without_the_variable_the_cache_is_memory() -> None:
    assert isinstance(TokenClient.from_env(environ=BASE).cache, MemoryTokenCache)


def test_a_cache_option_is_used_when_the_variable_is_unset() -> None:
    cache = FileTokenCache("/nonexistent/tokens.json")
    assert TokenClient.from_env(environ=BASE, cache=cache).cache is cache


def test_a_cache_option_and_the_variable_conflict() -> None:
    environ = {**BASE, "CCFLOW_TOKEN_CACHE": "redis://h/0"}
    with pytest.raises(ConfigurationError, match="CCFLOW_TOKEN_CACHE") as caught:
        TokenClient.from_env(environ=environ, cache=MemoryTokenCache())
    assert caught.value.setting == "cache"


@pytest.mark.parametrize(
    ("extra", "setting", "match"),
    [
        ({"CCFLOW_TOKEN_CACHE": "http://h/0"}, "CCFLOW_TOKEN_CACHE", "redis://, rediss://"),
        (
            {"CCFLOW_TOKEN_CACHE": "redis://h/0", "CCFLOW_TOKEN_CACHE_KEY": "short"},
            "CCFLOW_TOKEN_CACHE_KEY",
            "Fernet",
        ),
    ],
)
def test_bad_values_are_named_after_their_variable(
    extra: dict[str, str], setting: str, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        TokenClient.from_env(environ={**BASE, **extra})
    assert caught.value.setting == setting
    assert str(caught.value).startswith(setting)


def test_a_cache_that_is_no_token_cache_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"ccflow\.TokenCache") as caught:
        TokenClient(client_id="c", client_secret="s", tenant_id="t", cache=object())  # type: ignore[type-var]
    assert caught.value.setting == "cache"
