from __future__ import annotations

import pickle

import pytest

from ccflow.errors import (
    AuthorityUnreachableError,
    CCFlowError,
    ConfigurationError,
    CredentialError,
    InsufficientScopeError,
    InvalidTokenError,
    KeysUnavailableError,
    TokenRequestError,
)


@pytest.mark.parametrize(
    "err",
    [
        ConfigurationError("bad", setting="AZURE_TENANT_ID"),
        CredentialError("bad cert"),
        AuthorityUnreachableError("down", url="https://x/token"),
        TokenRequestError(
            "refused",
            status_code=401,
            error="invalid_client",
            error_description="AADSTS7000215: Invalid client secret provided.",
            error_codes=[7000215],
            trace_id="t",
            correlation_id="c",
            timestamp="2026-01-01 00:00:00Z",
        ),
        InvalidTokenError("expired", reason="expired", claim="exp"),
        InsufficientScopeError("no role", required=["invokeRole"]),
        KeysUnavailableError("no keys", retry_after=5),
    ],
)
def test_errors_pickle_with_their_attributes(err: CCFlowError) -> None:
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is type(err)
    assert vars(clone) == vars(err)
    assert str(clone) == str(err)
    assert isinstance(clone, CCFlowError)


@pytest.mark.parametrize(
    ("codes", "description", "expected"),
    [
        ([7000215], None, 7000215),
        ([], "AADSTS700016: Application not found", 700016),
        (None, "something else", None),
        (None, "AADSTSxyz: odd", None),
    ],
)
def test_aadsts_code(
    codes: list[int] | None, description: str | None, expected: int | None
) -> None:
    err = TokenRequestError("x", error_codes=codes, error_description=description)
    assert err.aadsts_code == expected
