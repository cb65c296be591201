"""The shared cache's IO-free rules: keys, the entry format, the fleet's single flight as
steps, and when a failed store is asked again."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest
from cryptography.fernet import Fernet

from ccflow._core.cache import CacheEntry
from ccflow._core.shared_cache import (
    ENTRY_PREFIX,
    KEY_PREFIX,
    Fetch,
    FillStep,
    Lock,
    Outage,
    Read,
    Store,
    Wait,
    decode_entry,
    encode_entry,
    entry_ttl_ms,
    fill_flow,
    lock_key,
    shared_key,
    usable,
)
from ccflow._core.steps import Done, advance
from ccflow._core.tokens import AccessToken

ENDPOINT = "https://login.example/tenant/oauth2/v2.0/token"
KEY = shared_key(ENDPOINT, "client", ("api://x/.default",))
TOKEN = AccessToken("secret-token", 5000, scopes=("api://x/.default",))
ENTRY = CacheEntry(TOKEN, 4000.0)


def test_keys_are_versioned_and_hold_neither_scopes_nor_ids() -> None:
    assert KEY.startswith(KEY_PREFIX)
    assert "client" not in KEY
    assert "api://" not in KEY
    assert lock_key(KEY) == KEY + ":lock"


@pytest.mark.parametrize(
    ("endpoint", "client_id", "scopes"),
    [
        (ENDPOINT.replace("tenant", "other"), "client", ("api://x/.default",)),
        (ENDPOINT, "client2", ("api://x/.default",)),
        (ENDPOINT, "client", ("api://y/.default",)),
    ],
)
def test_each_endpoint_tenant_client_and_scopes_has_its_own_key(
    endpoint: str, client_id: str, scopes: tuple[str, ...]
) -> None:
    assert shared_key(endpoint, client_id, scopes) != KEY


def test_scope_order_does_not_change_the_key() -> None:
    assert shared_key(ENDPOINT, "c", ("a", "b")) == shared_key(ENDPOINT, "c", ("b", "a"))


def test_an_entry_reads_back_as_written() -> None:
    assert decode_entry(KEY, encode_entry(KEY, ENTRY)) == ENTRY


def test_an_encrypted_entry_reads_back_only_with_its_key() -> None:
    fernet = Fernet(Fernet.generate_key())
    raw = encode_entry(KEY, ENTRY, fernet.encrypt)
    assert b"secret-token" not in raw
    assert decode_entry(KEY, raw, fernet.decrypt) == ENTRY
    assert decode_entry(KEY, raw, Fernet(Fernet.generate_key()).decrypt) is None
    assert decode_entry(KEY, raw) is None  # not JSON without the key
    assert decode_entry(KEY, encode_entry(KEY, ENTRY), fernet.decrypt) is None  # plain


def _raw(**changes: Any) -> bytes:
    fields = json.loads(encode_entry(KEY, ENTRY)[len(ENTRY_PREFIX) :])
    fields.update(changes)
    return ENTRY_PREFIX + json.dumps({k: v for k, v in fields.items() if v != "DROP"}).encode()


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "a str",
        b"",
        b"ccflow-entry-v0:{}",
        ENTRY_PREFIX + b"not json",
        ENTRY_PREFIX + b"[]",
        _raw(key=shared_key(ENDPOINT, "other", ())),
        _raw(token=""),
        _raw(token=7),
        _raw(token_type=None),
        _raw(expires_on="5000"),
        _raw(expires_on=True),
        _raw(expires_on=5000.5),
        _raw(refresh_at=6000),
        _raw(refresh_at="4000"),
        _raw(refresh_at=False),
        _raw(scopes="api://x/.default"),
        _raw(scopes=[1]),
        _raw(token="DROP"),
    ],
)
def test_anything_else_reads_as_missing(raw: object) -> None:
    assert decode_entry(KEY, raw) is None


@pytest.mark.parametrize(("now", "ttl"), [(1000.0, 4_000_000), (4999.9995, None), (6000, None)])
def test_an_entry_lives_until_its_token_expires(now: float, ttl: int | None) -> None:
    assert entry_ttl_ms(ENTRY, now) == ttl


@pytest.mark.parametrize(
    ("entry", "now", "refused", "expected"),
    [
        (None, 1000, None, False),
        (ENTRY, 1000, None, True),
        (ENTRY, 4000, None, False),  # due for refresh: this process refreshes
        (ENTRY, 1000, TOKEN, False),
        (ENTRY, 1000, AccessToken("other", 5000), True),
    ],
)
def test_usable(
    entry: CacheEntry | None, now: float, refused: AccessToken | None, expected: bool
) -> None:
    assert usable(entry, now, refused) is expected


def _run(flow: Generator[FillStep, Any, CacheEntry], replies: list[Any]) -> tuple[list[Any], Any]:
    """The steps ``flow`` takes given ``replies`` in order, and what it returns."""
    steps: list[Any] = []
    for reply in [None, *replies]:
        step = advance(flow, reply)
        if isinstance(step, Done):
            return steps, step.value
        steps.append(step)
    raise AssertionError(f"the flow went on: {steps}")


def test_a_usable_entry_is_served_without_a_lock() -> None:
    steps, result = _run(fill_flow(1000, 10, 0.05), [ENTRY])
    assert steps == [Read()]
    assert result == ENTRY


def test_a_miss_takes_the_lock_reads_again_fetches_and_stores() -> None:
    fetched = CacheEntry(AccessToken("new", 9000), 8000)
    steps, result = _run(fill_flow(1000, 10, 0.05), [None, (True, 0), None, fetched, None])
    assert steps == [Read(), Lock(), Read(), Fetch(), Store(fetched)]
    assert result == fetched


def test_an_entry_stored_just_before_the_lock_was_taken_is_used() -> None:
    steps, result = _run(fill_flow(1000, 10, 0.05), [None, (True, 0), ENTRY])
    assert steps == [Read(), Lock(), Read()]
    assert result == ENTRY


def test_a_waiter_polls_until_the_holder_stores() -> None:
    replies = [None, (False, 1), 1.05, None, (False, 1.1), 1.15, ENTRY]
    steps, result = _run(fill_flow(1000, 10, 0.05), replies)
    assert steps == [Read(), Lock(), Wait(0.05), Read(), Lock(), Wait(0.05), Read()]
    assert result == ENTRY


def test_a_waiter_takes_over_when_the_dead_holders_lock_expired() -> None:
    fetched = CacheEntry(AccessToken("new", 9000), 8000)
    replies = [None, (False, 1), 2, None, (True, 2), None, fetched, None]
    steps, result = _run(fill_flow(1000, 10, 0.05), replies)
    assert steps[-4:] == [Lock(), Read(), Fetch(), Store(fetched)]
    assert result == fetched


def test_a_waiter_fetches_alone_after_the_deadline() -> None:
    fetched = CacheEntry(AccessToken("new", 9000), 8000)
    steps, result = _run(fill_flow(1000, 10, 0.05), [None, (False, 10), fetched, None])
    assert steps == [Read(), Lock(), Fetch(), Store(fetched)]
    assert result == fetched


def test_a_refused_token_read_back_counts_as_missing() -> None:
    steps, _ = _run(fill_flow(1000, 10, 0.05, TOKEN), [ENTRY, (True, 0), ENTRY, ENTRY, None])
    assert steps == [Read(), Lock(), Read(), Fetch(), Store(ENTRY)]


def test_one_warning_per_outage_and_a_pause_before_asking_again() -> None:
    outage = Outage(retry_after=5)
    assert outage.should_try(0)
    assert outage.failed(0) is True
    assert not outage.should_try(4.9)
    assert outage.should_try(5)
    assert outage.failed(5) is False  # the same outage
    assert outage.answered() is True
    assert outage.answered() is False
    assert outage.should_try(6)
