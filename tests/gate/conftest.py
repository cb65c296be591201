"""The gate on the local authority: the suite's calc validator, and the gate."""

from __future__ import annotations

from typing import Any

import pytest
from tests.support import NOW, calc_validator

from ccflow.authority import Authority
from ccflow.gate import Gate, Rules


@pytest.fixture
def authority() -> Authority:
    return Authority(clock=lambda: float(NOW))


@pytest.fixture
def make_gate(authority: Authority) -> Any:
    def make(rules: dict[str, Any] | None = None, **options: Any) -> Gate:
        document = rules if rules is not None else {"default": {"roles": ["invokeRole"]}}
        return Gate(Rules.from_mapping(document), validator=calc_validator(authority), **options)

    return make
