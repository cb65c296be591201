"""Discovery documents: the issuer and jwks_uri an API relies on, checked before use."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from ccflow._core import json_object as json_object_module
from ccflow._core.discovery import (
    DiscoveryError,
    ProviderMetadata,
    discovery_url_for_issuer,
    parse_discovery,
)
from ccflow.errors import ConfigurationError

ISS = "https://idp.example/realms/a"
DOC = {"issuer": ISS, "jwks_uri": "https://idp.example/realms/a/certs", "extra": [1]}


def test_parses_issuer_and_jwks_uri() -> None:
    assert parse_discovery(DOC, expected_issuer=ISS) == ProviderMetadata(
        issuer=ISS, jwks_uri="https://idp.example/realms/a/certs"
    )


def test_accepts_json_bytes() -> None:
    assert parse_discovery(b'{"issuer": "https://i", "jwks_uri": "https://i/k"}').issuer == (
        "https://i"
    )


def test_multi_tenant_template_is_recognised() -> None:
    doc = {"issuer": "https://login.example/{tenantid}/v2.0", "jwks_uri": "https://l/k"}
    assert parse_discovery(doc, multi_tenant=True).multi_tenant


def test_loopback_http_is_accepted() -> None:
    doc = {"issuer": "http://127.0.0.1:8080/t/v2.0", "jwks_uri": "http://127.0.0.1:8080/keys"}
    assert parse_discovery(doc).jwks_uri == "http://127.0.0.1:8080/keys"


BAD: dict[str, tuple[Any, dict[str, Any]]] = {
    "not JSON": (b"<html>", {}),
    "not an object": (b"[1]", {}),
    "no issuer": ({"jwks_uri": "https://i/k"}, {}),
    "issuer not a string": ({"issuer": 1, "jwks_uri": "https://i/k"}, {}),
    "no jwks_uri": ({"issuer": ISS}, {}),
    "jwks_uri empty": ({"issuer": ISS, "jwks_uri": ""}, {}),
    "issuer differs from configured": (DOC, {"expected_issuer": ISS + "/"}),
    "issuer of another realm": (
        {**DOC, "issuer": "https://idp.example/realms/b"},
        {"expected_issuer": ISS},
    ),
    "plain http jwks_uri": ({**DOC, "jwks_uri": "http://idp.example/certs"}, {}),
    "plain http issuer": ({**DOC, "issuer": "http://idp.example/"}, {}),
    "jwks_uri not a URL": ({**DOC, "jwks_uri": "certs"}, {}),
    "jwks_uri with a broken IPv6 host": ({**DOC, "jwks_uri": "https://[idp.example/certs"}, {}),
    "jwks_uri with a port that is not a number": ({**DOC, "jwks_uri": "https://idp:x/certs"}, {}),
    "jwks_uri with a port out of range": ({**DOC, "jwks_uri": "https://idp:99999/certs"}, {}),
    "issuer with a broken IPv6 host": ({**DOC, "issuer": "https://[idp.example"}, {}),
    "template when single tenant expected": (
        {**DOC, "issuer": "https://l/{tenantid}/v2.0"},
        {"multi_tenant": False},
    ),
    "single tenant when template expected": (DOC, {"multi_tenant": True}),
}


@pytest.mark.parametrize(("document", "options"), BAD.values(), ids=BAD.keys())
def test_unusable_documents_are_refused(document: Any, options: dict[str, Any]) -> None:
    with pytest.raises(DiscoveryError):
        parse_discovery(document, **options)


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"<html>", "not valid JSON"),
        (b"[" * 10000, "not valid JSON"),
        ("null", "not a JSON object"),
    ],
)
def test_a_document_that_is_no_json_object_is_refused_by_its_name(document: Any, why: str) -> None:
    with pytest.raises(DiscoveryError, match=f"^the discovery document is {why}$"):
        parse_discovery(document)


def test_json_object_doctest() -> None:
    assert doctest.testmod(json_object_module).failed == 0


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        (ISS, ISS + "/.well-known/openid-configuration"),
        (ISS + "/", ISS + "/.well-known/openid-configuration"),
        ("http://localhost:9000", "http://localhost:9000/.well-known/openid-configuration"),
    ],
)
def test_discovery_url_for_issuer(issuer: str, url: str) -> None:
    assert discovery_url_for_issuer(issuer) == url


def test_discovery_url_refuses_plain_http_to_a_remote_host() -> None:
    with pytest.raises(ConfigurationError) as info:
        discovery_url_for_issuer("http://idp.example", setting="CCFLOW_ISSUER")
    assert info.value.setting == "CCFLOW_ISSUER"
