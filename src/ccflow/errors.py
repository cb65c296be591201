"""Every error ccflow raises, in one tree.

::

    CCFlowError
    ├── ConfigurationError            bad settings; names the argument or environment variable
    ├── CredentialError               a credential cannot be loaded or used (certificate, key, file)
    ├── AuthorityUnreachableError     connection failed, timed out, or the answer was unusable
    ├── TokenRequestError             the token endpoint refused (OAuth error, AADSTS code, 4xx/5xx)
    ├── InvalidRequestError           a malformed or repeated Authorization header -> HTTP 400
    ├── InvalidTokenError             an access token failed validation          -> HTTP 401
    ├── InsufficientScopeError        valid token, but a role or caller is not allowed -> HTTP 403
    └── KeysUnavailableError          no usable signing keys (authority down on a cold start) -> 503

Each error carries what a user needs to act on it (the AADSTS code and trace/correlation ids,
which claim failed, which variable is wrong) and never a secret, an assertion or a token.
Errors pickle and unpickle with their attributes intact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AuthorityUnreachableError",
    "CCFlowError",
    "ConfigurationError",
    "CredentialError",
    "InsufficientScopeError",
    "InvalidRequestError",
    "InvalidTokenError",
    "KeysUnavailableError",
    "TokenRequestError",
]


class CCFlowError(Exception):
    """Base class of every error ccflow raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors do not survive the default Exception pickling.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[CCFlowError], state: dict[str, Any]) -> CCFlowError:
    """An error unpickled: its attributes restored without calling its constructor."""
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class ConfigurationError(CCFlowError):
    """Settings are missing or contradictory; the message names the argument or variable."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class CredentialError(CCFlowError):
    """A credential cannot be loaded or used: wrong password, key and certificate disagree..."""


class AuthorityUnreachableError(CCFlowError):
    """The authority (token endpoint, discovery or JWKS) could not be reached or gave no usable
    answer after the configured retries. ``url`` is the endpoint, never with credentials."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class TokenRequestError(CCFlowError):
    """The token endpoint answered with an error.

    Carries the fields of an OAuth 2.0 / Azure AD error body, each ``None`` when absent::

        try:
            client.get_token("api://calc/.default")
        except TokenRequestError as e:
            print(e.status_code, e.error, e.aadsts_code, e.trace_id, e.correlation_id)
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error: str | None = None,
        error_description: str | None = None,
        error_codes: Sequence[int] | None = None,
        trace_id: str | None = None,
        correlation_id: str | None = None,
        timestamp: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error
        self.error_description = error_description
        self.error_codes: tuple[int, ...] = tuple(error_codes or ())
        self.trace_id = trace_id
        self.correlation_id = correlation_id
        self.timestamp = timestamp
        self.retry_after = retry_after

    @property
    def aadsts_code(self) -> int | None:
        """The first AADSTS code (``7000215`` for ``AADSTS7000215``), if the server sent one."""
        if self.error_codes:
            return self.error_codes[0]
        desc = self.error_description or ""
        if desc.startswith("AADSTS"):
            digits = desc[6:].split(":", 1)[0]
            if digits.isdigit():
                return int(digits)
        return None


class InvalidRequestError(CCFlowError, ValueError):
    """The Authorization header is malformed or repeated (RFC 6750 ``invalid_request``, 400).

    Raised by ``ccflow.starlette.bearer_token`` before any token is validated; the message is
    safe to send back as ``error_description``. Also a ``ValueError``, as it always was.
    """


class InvalidTokenError(CCFlowError):
    """An access token failed validation (RFC 6750 ``invalid_token``, HTTP 401).

    ``reason`` is a short, stable code for the failed check (``"expired"``, ``"audience"``,
    ``"issuer"``, ``"signature"``, ``"malformed"``, ...); the message is safe to send back to
    the caller as ``error_description`` and never contains the token. ``expected`` holds what
    the check accepts, when it compares values (the audiences, the issuers), for a person to
    compare with the token's claim; it is not part of the message.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "invalid",
        claim: str | None = None,
        expected: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.claim = claim
        self.expected: tuple[str, ...] = tuple(expected)


class InsufficientScopeError(CCFlowError):
    """A valid token whose caller or roles are not allowed (RFC 6750 insufficient_scope, 403).

    ``client_id`` and ``tenant_id`` name the verified caller the refusal concerns, when the
    check that refused it had a verified token (what the refusal log shows).
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str = "role",
        required: Sequence[str] = (),
        client_id: str | None = None,
        tenant_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.required: tuple[str, ...] = tuple(required)
        self.client_id = client_id
        self.tenant_id = tenant_id


class KeysUnavailableError(CCFlowError):
    """No usable signing keys: discovery or JWKS could not be fetched and none are cached.

    APIs answer 503 with ``Retry-After: retry_after``.
    """

    def __init__(self, message: str, *, retry_after: int = 30) -> None:
        super().__init__(message)
        self.retry_after = retry_after
