"""The gate on the local authority: a validator on an in-process authority, and the gate."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.support import LEEWAY, NOW

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.gate import Gate, Rules


def gate_validator(authority: Authority) -> TokenValidator:
    """The calc-api validator, as the suite's RequireRole has it."""
    api = authority.api("calc-api")
    return TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        allowed_clients=[
            authority.client("calc-client").client_id,
            authority.client("reader-client").client_id,
        ],
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=lambda: float(NOW),
        leeway=LEEWAY,
    )


@pytest.fixture
def authority() -> Authority:
    return Authority(clock=lambda: float(NOW))


@pytest.fixture
def make_gate(authority: Authority) -> Any:
    def make(rules: dict[str, Any] | None = None, **options: Any) -> Gate:
        document = rules if rules is not None else {"default": {"roles": ["invokeRole"]}}
        return Gate(Rules.from_mapping(document), validator=gate_validator(authority), **options)

    return make
