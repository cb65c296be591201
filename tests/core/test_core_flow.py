"""The fetch flow, driven by hand: every retry and fallback decision without any IO."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest

from ccflow._core.cache import CacheEntry, RefreshPolicy
from ccflow._core.flow import (
    Failure,
    FetchConfig,
    FetchOutcome,
    Prepare,
    Prepared,
    Reply,
    Send,
    Step,
    StepReply,
    Unprepared,
    Wait,
    fetch_flow,
)
from ccflow._core.retry import RetryPolicy
from ccflow._core.steps import Done, advance
from ccflow._core.tokens import AccessToken, ErrorContext, RequestFields
from ccflow.errors import AuthorityUnreachableError, CredentialError, TokenRequestError

ENDPOINT = "https://login.test/tenant/oauth2/v2.0/token"
SCOPES = ("api://calc/.default",)
CONFIG = FetchConfig(
    ENDPOINT,
    "cid",
    "client_secret_post",
    RetryPolicy(max_retries=3, jitter=lambda: 1.0),
    RefreshPolicy(),
)
CONTEXT = ErrorContext("cid", ENDPOINT, SCOPES)
OK = (200, json.dumps({"access_token": "fresh", "expires_in": 3599}).encode(), None)
RESET = Failure("connect", "ConnectError", 0.0)
TIMEOUT = Failure("timeout", "ReadTimeout", 0.0)


def answer(status: int, body: dict[str, Any] | bytes = b"", retry_after: str | None = None) -> Any:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return (status, raw, retry_after)


def run(
    replies: list[Any], cached: CacheEntry | None = None, now: float = 1000.0
) -> tuple[FetchOutcome, list[Step]]:
    """Drive the flow, answering each Send with the next scripted reply."""
    flow: Generator[Step, StepReply, FetchOutcome] = fetch_flow(
        CONFIG, SCOPES, cached=cached, now=now, context=CONTEXT
    )
    steps: list[Step] = []
    reply: StepReply = None
    script = iter(replies)
    while not isinstance(step := advance(flow, reply), Done):
        steps.append(step)
        if isinstance(step, Prepare):
            reply = Prepared(RequestFields(form=(("client_id", "cid"),)), now)
        elif isinstance(step, Send):
            item = next(script)
            reply = item if isinstance(item, Failure) else Reply(*item, now)
        else:
            reply = now
    return step.value, steps


def test_advance_gives_each_step_then_what_the_flow_returned() -> None:
    def flow() -> Generator[str, int | None, int]:
        first = yield "first"
        second = yield "second"
        return (first or 0) + (second or 0)

    running = flow()
    assert advance(running, None) == "first"  # None starts it
    assert advance(running, 2) == "second"
    assert advance(running, 3) == Done(5)


def test_advance_lets_a_flow_error_through() -> None:
    def flow() -> Generator[str, None, None]:
        yield "only"
        raise TokenRequestError("refused", status_code=400)

    running = flow()
    advance(running, None)
    with pytest.raises(TokenRequestError, match="refused"):
        advance(running, None)


def waits(steps: list[Step]) -> list[float]:
    return [s.seconds for s in steps if isinstance(s, Wait)]


def sends(steps: list[Step]) -> int:
    return sum(isinstance(s, Send) for s in steps)


def valid_entry(now: float = 1000.0) -> CacheEntry:
    return CacheEntry(AccessToken("old", int(now) + 100, scopes=SCOPES), now - 1)


def test_first_answer_ok() -> None:
    outcome, steps = run([OK])
    assert outcome.entry.token.token == "fresh"
    assert outcome.expires_in == 3599
    assert [type(s) for s in steps] == [Prepare, Send]


def test_credential_is_asked_before_every_attempt() -> None:
    _, steps = run([answer(503), OK])
    assert [type(s) for s in steps] == [Prepare, Send, Wait, Prepare, Send]


@pytest.mark.parametrize(
    ("first", "expected_wait"),
    [
        (answer(429, {"error": "throttled"}, "7"), [7.0]),
        (answer(429, b"", "Thu, 01 Jan 1970 00:16:50 GMT"), [10.0]),  # HTTP date, now=1000
        (answer(503, b"<html/>"), [0.5]),
        (answer(500, {"error": "server_error"}), [0.5]),
        (RESET, [0.5]),
        (TIMEOUT, [0.5]),
    ],
)
def test_transient_failure_is_retried(first: Any, expected_wait: list[float]) -> None:
    outcome, steps = run([first, OK])
    assert outcome.entry.token.token == "fresh"
    assert outcome.attempts == 2
    assert waits(steps) == expected_wait


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (answer(503, b"<html/>"), "503"),
        (answer(429, {"error": "throttled"}, "7"), "429"),
        (TIMEOUT, "timeout"),
        (RESET, "connection error"),
        (Failure("dropped", "ReadError", 0.0), "connection error"),
    ],
)
def test_each_wait_says_what_failed(first: Any, reason: str) -> None:
    # The faces log it before sleeping, so a slow authority is never silent.
    _, steps = run([first, OK])
    assert [s.reason for s in steps if isinstance(s, Wait)] == [reason]


def test_backoff_grows_between_retries() -> None:
    _, steps = run([answer(503), answer(503), answer(503), OK])
    assert waits(steps) == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("replies", "error", "match"),
    [
        ([answer(503)] * 4, TokenRequestError, "HTTP 503"),
        ([RESET] * 4, AuthorityUnreachableError, "could not connect"),
        ([TIMEOUT] * 4, AuthorityUnreachableError, "timed out"),
        (
            [Failure("unreadable", "DecodingError", 0.0)] * 4,
            AuthorityUnreachableError,
            "sent an answer that could not be read",
        ),
        ([RESET, RESET, RESET, answer(429, {"error": "x"}, "1")], TokenRequestError, "HTTP 429"),
    ],
)
def test_gives_up_after_max_retries_with_the_last_error(
    replies: list[Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        run(replies)


@pytest.mark.parametrize(
    "reply",
    [
        answer(400, {"error": "invalid_scope"}),
        answer(401, {"error": "invalid_client"}),
        answer(403, b""),
        answer(200, b"not json"),
    ],
)
def test_oauth_4xx_and_unusable_success_are_not_retried(reply: Any) -> None:
    flow = fetch_flow(CONFIG, SCOPES, cached=None, now=0.0, context=CONTEXT)
    assert isinstance(next(flow), Prepare)
    assert isinstance(flow.send(Prepared(RequestFields(), 0.0)), Send)
    with pytest.raises((TokenRequestError, AuthorityUnreachableError)):
        flow.send(Reply(*reply, 0.0))


def test_failed_refresh_of_a_valid_token_serves_it_without_retrying() -> None:
    cached = valid_entry()
    outcome, steps = run([answer(503)], cached=cached)
    assert outcome.entry.token is cached.token
    assert isinstance(outcome.error, TokenRequestError)
    assert outcome.entry.refresh_at == 1000.0 + 30
    assert sends(steps) == 1
    assert waits(steps) == []


def test_refused_refresh_of_a_valid_token_also_serves_it() -> None:
    cached = valid_entry()
    outcome, _ = run([answer(401, {"error": "invalid_client"})], cached=cached)
    assert outcome.entry.token is cached.token


def test_expired_cached_token_is_not_served_after_failure() -> None:
    expired = CacheEntry(AccessToken("old", 900, scopes=SCOPES), 800)
    with pytest.raises(TokenRequestError):
        run([answer(503)] * 4, cached=expired)


def test_raised_error_carries_no_exception_context() -> None:
    with pytest.raises(AuthorityUnreachableError) as info:
        run([RESET] * 4)
    assert info.value.__context__ is None
    assert info.value.__cause__ is None


def unprepared_flow(cached: CacheEntry | None) -> Generator[Step, StepReply, FetchOutcome]:
    flow = fetch_flow(CONFIG, SCOPES, cached=cached, now=1000.0, context=CONTEXT)
    assert isinstance(flow.send(None), Prepare)
    return flow


def test_a_failing_credential_during_a_refresh_serves_the_valid_token() -> None:
    cached = valid_entry()
    error = CredentialError("the assertion callable make failed: RuntimeError")
    with pytest.raises(StopIteration) as stop:
        unprepared_flow(cached).send(Unprepared(error, 1000.0))
    outcome: FetchOutcome = stop.value.value
    assert outcome.entry.token is cached.token
    assert outcome.error is error
    assert outcome.entry.refresh_at == 1000.0 + 30


@pytest.mark.parametrize("cached", [None, CacheEntry(AccessToken("old", 900, scopes=SCOPES), 800)])
def test_a_failing_credential_without_a_valid_token_raises_its_error(
    cached: CacheEntry | None,
) -> None:
    error = CredentialError("cannot read federated token file '/var/run/token'")
    with pytest.raises(CredentialError) as info:
        unprepared_flow(cached).send(Unprepared(error, 1000.0))
    assert info.value is error
