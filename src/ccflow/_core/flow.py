"""The token fetch as a generator the sync and async faces drive (the httpx auth-flow shape).

Every decision lives here: building the request, retrying, backoff, reading the answer,
serving a still-valid token when a refresh fails. The faces only perform the steps::

    flow = fetch_flow(config, scopes, cached=entry, now=now, context=context)
    reply = None
    while not isinstance(step := advance(flow, reply), Done):  # ccflow._core.steps
        if isinstance(step, Prepare):   # ask the credential, read the clock
            reply = Prepared(credential.request_fields(...), clock())
            # or Unprepared(error, clock()) when the credential raised CredentialError
        elif isinstance(step, Send):    # send it
            reply = Reply(status, body, retry_after_header, clock())  # or Failure(...)
        else:                           # Wait
            sleep(step.seconds); reply = clock()
    outcome = step.value                # a FetchOutcome; errors propagate as exceptions
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from ccflow._core.cache import CacheEntry, RefreshPolicy, TokenState
from ccflow._core.retry import RetryPolicy
from ccflow._core.tokens import (
    ErrorContext,
    RequestFields,
    TokenRequest,
    TokenResponse,
    build_token_request,
    parse_token_response,
)
from ccflow.errors import AuthorityUnreachableError, CCFlowError, TokenRequestError

__all__ = [
    "FetchConfig",
    "FetchOutcome",
    "Failure",
    "Prepare",
    "Prepared",
    "Reply",
    "Send",
    "Step",
    "Unprepared",
    "Wait",
    "fetch_flow",
]


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """Everything about a client that a fetch needs (no secrets: those come via Prepare)."""

    token_endpoint: str
    client_id: str
    auth_method: str
    retry: RetryPolicy
    refresh: RefreshPolicy


@dataclass(frozen=True, slots=True)
class Prepare:
    """Step: ask the credential for its request fields (``reply``: :class:`Prepared`), or,
    from a credential that makes the whole request (managed identity), the request for
    ``scopes``."""

    client_id: str
    token_endpoint: str
    auth_method: str
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Prepared:
    """Reply to :class:`Prepare`: the credential's fields and the time they were made."""

    fields: RequestFields
    now: float
    request: TokenRequest | None = None
    """The whole request, when the credential made it (then ``fields`` are not used)."""


@dataclass(frozen=True, slots=True)
class Unprepared:
    """Reply to :class:`Prepare` when the credential could not produce its fields (its
    assertion source is down, its token file unreadable...): ``error`` and when it happened."""

    error: CCFlowError
    now: float


@dataclass(frozen=True, slots=True)
class Send:
    """Step: send ``request`` (``reply``: :class:`Reply` or :class:`Failure`)."""

    request: TokenRequest


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, body (``None`` when it could not be read: an event hook of
    the user's HTTP client raised for the answer before it was read), the ``Retry-After``
    header, and when it arrived."""

    status: int
    body: bytes | None
    retry_after: str | None
    now: float


@dataclass(frozen=True, slots=True)
class Failure:
    """No usable HTTP answer: ``kind`` is ``"connect"``, ``"timeout"``, ``"dropped"`` (the
    connection broke after it was made, or the answer was not HTTP), ``"unreadable"`` (a
    body that cannot be decoded) or ``"untrusted"`` (the server's TLS certificate did not
    verify: not retried, asking again cannot change it); ``detail`` is safe text."""

    kind: str
    detail: str
    now: float


@dataclass(frozen=True, slots=True)
class Wait:
    """Step: sleep ``seconds`` before retrying (``reply``: the clock afterwards); ``reason``
    is what failed, for the faces to say: the status (``"503"``), ``"timeout"`` or
    ``"connection error"``."""

    seconds: float
    reason: str = ""


Step = Prepare | Send | Wait
StepReply = Prepared | Unprepared | Reply | Failure | float | None


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """How a fetch ended: ``entry`` to cache and serve; ``expires_in`` for a new token, or
    ``error`` when the refresh failed and the still-valid cached token is served instead."""

    entry: CacheEntry
    expires_in: int | None = None
    attempts: int = 1
    error: CCFlowError | None = None


def fetch_flow(
    config: FetchConfig,
    scopes: tuple[str, ...],
    *,
    cached: CacheEntry | None,
    now: float,
    context: ErrorContext,
    claims: str | None = None,
) -> Generator[Step, StepReply, FetchOutcome]:
    """Fetch a token for ``scopes``, retrying transient failures.

    When ``cached`` is still usable at ``now`` (a proactive refresh), one attempt is made and
    a failure (of the request or of the credential) serves ``cached`` again instead of
    raising: callers should not wait through backoff for a token they already have.
    ``claims`` is a claims challenge (CAE) to send along.
    """
    usable = RefreshPolicy.state(cached, now) in (TokenState.FRESH, TokenState.STALE)
    max_retries = 0 if usable else config.retry.max_retries
    attempt = 0
    while True:
        prepared = yield Prepare(
            config.client_id, config.token_endpoint, config.auth_method, scopes
        )
        if isinstance(prepared, Unprepared):
            # Nothing to send, and not a transient network fault worth a backoff here; but a
            # still-valid cached token is served as after any other failed refresh.
            kept = config.refresh.after_failure(cached, now=prepared.now)
            if kept is None:
                raise prepared.error
            return FetchOutcome(kept, None, attempt + 1, prepared.error)
        assert isinstance(prepared, Prepared)
        request = prepared.request or build_token_request(
            config.token_endpoint, scopes, prepared.fields, claims=claims
        )
        reply = yield Send(request)
        assert isinstance(reply, Reply | Failure)
        now = reply.now
        read = _read(config, scopes, reply, context, attempt)
        if isinstance(read, TokenResponse):
            entry = config.refresh.entry(
                read.token, now=now, expires_in=read.expires_in, refresh_in=read.refresh_in
            )
            return FetchOutcome(entry, read.expires_in, attempt + 1)
        error, retryable, retry_after = read
        if retryable and attempt < max_retries:
            status = error.status_code if isinstance(error, TokenRequestError) else None
            now_after = yield Wait(config.retry.delay(attempt, retry_after, status), _reason(reply))
            assert isinstance(now_after, float | int)
            attempt += 1
            continue
        fallback = config.refresh.after_failure(cached, now=now, retry_after=retry_after)
        if fallback is None:
            raise error
        return FetchOutcome(fallback, None, attempt + 1, error)


def _reason(reply: Reply | Failure) -> str:
    """What a retried attempt ran into, as the retry line names it."""
    if isinstance(reply, Reply):
        return str(reply.status)
    return "timeout" if reply.kind == "timeout" else "connection error"


def _unreachable(config: FetchConfig, reply: Failure, attempt: int) -> AuthorityUnreachableError:
    """The error for a request that got no usable answer, with what to check."""
    what = {
        "timeout": "timed out",
        "dropped": "dropped the connection or did not answer in HTTP",
        "unreadable": "sent an answer that could not be read",
        "untrusted": "presented a TLS certificate that did not verify",
    }.get(reply.kind, "could not connect")
    advice = (
        "if the authority uses a private CA, trust it with SSL_CERT_FILE (or an "
        "http_client's verify=; ccflow token: --ca-file)"
        if reply.kind == "untrusted"
        else "check the network, proxy and authority host"
    )
    return AuthorityUnreachableError(
        f"the token endpoint {config.token_endpoint} {what} ({reply.detail}) after "
        f"{attempt + 1} attempt(s); {advice}",
        url=config.token_endpoint,
    )


def _read(
    config: FetchConfig,
    scopes: tuple[str, ...],
    reply: Reply | Failure,
    context: ErrorContext,
    attempt: int,
) -> TokenResponse | tuple[CCFlowError, bool, float | None]:
    """The token in ``reply``, or (error, whether to retry, the server's Retry-After)."""
    if isinstance(reply, Failure):
        # Asking again cannot make an untrusted certificate verify.
        return _unreachable(config, reply, attempt), reply.kind != "untrusted", None
    try:
        return parse_token_response(
            reply.status,
            reply.body,
            scopes=scopes,
            now=reply.now,
            context=context,
            retry_after=reply.retry_after,
        )
    except TokenRequestError as exc:
        return exc, config.retry.retries(exc.status_code), exc.retry_after
    except AuthorityUnreachableError as exc:
        return exc, False, None
