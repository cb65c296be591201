"""Regression tests for bugs found in a review of the local authority, testing helpers and
pytest plugin (each failed before its fix)."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import time
from pathlib import Path

import httpx
import pytest

from ccflow.authority import Authority, AuthorityServer, Fault, Registrations
from ccflow.errors import ConfigurationError
from ccflow.testing import TokenFactory, decode_unverified


def _client_credentials(authority: Authority, client: str = "calc-client") -> dict[str, str]:
    app = authority.client(client)
    assert app.secret is not None
    return {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "client_secret": app.secret,
        "scope": authority.api("calc-api").default_scope,
    }


def test_a_host_with_a_path_prefix_serves_the_endpoints_it_advertises() -> None:
    # normalize_authority_host accepts a proxy prefix (and TokenClient/TokenValidator use
    # one), but every endpoint under it answered 404.
    authority = Authority(host="https://login.ccflow.test/prefix")
    with httpx.Client(transport=authority.transport()) as http:
        document = http.get(authority.discovery_url)
        assert document.status_code == 200
        assert document.json()["token_endpoint"] == authority.token_endpoint
        assert http.get(authority.jwks_uri).status_code == 200
        answer = http.post(authority.token_endpoint, data=_client_credentials(authority))
        assert answer.status_code == 200, answer.text
        # Outside the prefix nothing is served.
        outside = f"https://login.ccflow.test/{authority.tenant_id}/discovery/v2.0/keys"
        assert http.get(outside).status_code == 404


def test_two_apis_with_one_app_id_uri_are_a_configuration_error(tmp_path: Path) -> None:
    # The second API could never be reached: a scope names the first one.
    config = tmp_path / "registrations.toml"
    config.write_text(
        '[apis.orders]\nclient_id = "11111111-0000-4000-8000-000000000001"\n'
        'identifier_uri = "api://shop"\n'
        '[apis.payments]\nclient_id = "11111111-0000-4000-8000-000000000002"\n'
        'identifier_uri = "api://shop/"\n'
    )
    with pytest.raises(ConfigurationError, match="identifier_uri 'api://shop'"):
        Registrations.from_toml(config)


@pytest.mark.parametrize(
    ("registrations", "client", "version"),
    [
        (Registrations.multi_tenant(), "partner-client", 2),
        (Registrations.default(), "calc-client", 1),
    ],
)
def test_wrong_issuer_differs_from_valid_in_the_issuers_host_only(
    registrations: Registrations, client: str, version: int
) -> None:
    # It always wrote https://login.evil.test/<first tenant>/v2.0: for a client of another
    # tenant the tenant in iss changed too (so a multi-tenant validator failed the iss/tid
    # check, not the issuer's), and for a v1 API the issuer's shape changed too.
    apis = tuple(dataclasses.replace(a, access_token_version=version) for a in registrations.apis)
    authority = Authority(dataclasses.replace(registrations, apis=apis), clock=lambda: 1.7e9)
    tokens = TokenFactory(authority)
    _, valid = decode_unverified(tokens.valid(client))
    _, wrong = decode_unverified(tokens.wrong_issuer(client))
    assert wrong["iss"] == valid["iss"].replace(authority.host, "https://login.evil.test")
    assert wrong["iss"] != valid["iss"]
    assert {k for k in valid if valid[k] != wrong[k]} <= {"iss", "aio", "rh", "uti"}


def test_stop_closes_a_connection_stalled_before_the_tls_handshake() -> None:
    # The handshake ran before the connection was tracked, so stop() left a client that had
    # connected but not yet said hello hanging (the server held it for the 60 s idle timeout).
    server = AuthorityServer(tls=True).start()
    try:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    except BaseException:
        server.stop()
        raise
    with client:
        deadline = time.monotonic() + 5
        while not server._httpd._connections and time.monotonic() < deadline:
            time.sleep(0.01)
        server.stop()
        client.settimeout(3)
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""


@pytest.mark.parametrize("tenant", ["my tenant", "a?b", "a#b", "ten%2Fant", "tab\\tbed"])
def test_a_tenant_id_no_url_can_carry_is_a_configuration_error(tmp_path: Path, tenant: str) -> None:
    # They were accepted: then `ccflow authority serve` started, and died (exit 1, "unexpected
    # ConfigurationError") building the endpoints it prints, or ("%2F") served only 404s.
    config = tmp_path / "registrations.toml"
    config.write_text(f'tenant_id = "{tenant}"\n')
    with pytest.raises(ConfigurationError, match="cannot be a tenant id"):
        Registrations.from_toml(config)
    config.write_text(f'tenants = ["{tenant}"]\n')
    with pytest.raises(ConfigurationError, match="cannot be a tenant id"):
        Registrations.from_toml(config)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('tenant = "11111111-2222-4333-8444-555555555555"\n', "the registrations file"),
        ('[client.shop]\nclient_id = "c"\nsecret = "s"\n', "the registrations file"),
        ('[apis.orders]\nclient_id = "a"\nrole = ["Orders.Read"]\n', "apis.orders"),
        (
            '[apis.orders]\nclient_id = "a"\nroles = ["Orders.Read"]\n'
            '[clients.shop]\nclient_id = "c"\nsecret = "s"\nrole = { orders = ["Orders.Read"] }\n',
            "clients.shop",
        ),
    ],
)
def test_a_misspelt_key_in_the_registrations_file_is_a_configuration_error(
    tmp_path: Path, text: str, where: str
) -> None:
    # It was ignored in silence: `role =` gave a client no grant (tokens without roles, 403s),
    # `[client.shop]` no client at all.
    config = tmp_path / "registrations.toml"
    config.write_text(text)
    with pytest.raises(ConfigurationError, match=f"unknown key.* in {where}; known: "):
        Registrations.from_toml(config)


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault(timeout=True, delay=0.2), 200), (Fault(timeout=True, delay=0.2, status=503), 503)],
)
def test_a_timeout_fault_on_the_server_answers_late_as_documented(
    fault: Fault, status: int
) -> None:
    # Documented as "answer only after delay seconds", it closed the connection instead, so a
    # client patient enough got a RemoteProtocolError rather than the (late) answer.
    with AuthorityServer() as server, httpx.Client(timeout=5) as http:
        server.authority.set_fault("discovery", fault)
        started = time.monotonic()
        answer = http.get(server.authority.discovery_url)
        assert time.monotonic() - started >= 0.2
        assert answer.status_code == status
        if status == 200:
            assert answer.json()["issuer"] == server.authority.issuer


@pytest.mark.parametrize("coding", ["chunked", "Chunked", "gzip, chunked", "chunked "])
def test_any_transfer_encoding_is_refused_and_never_read_as_a_second_request(
    coding: str,
) -> None:
    # Only the exact value "chunked" was refused: with "gzip, chunked" the body was taken as
    # empty (a 400 about grant_type) and the chunks were then parsed as a second request.
    with AuthorityServer() as server:
        tenant = server.authority.tenant_id
        request = (
            f"POST /{tenant}/oauth2/v2.0/token HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Transfer-Encoding: {coding}\r\n\r\n"
            "1d\r\ngrant_type=client_credentials\r\n0\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(request)
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 411 ")
    assert received.count(b"HTTP/1.") == 1
