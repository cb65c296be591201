"""The HTTP clients ccflow makes for itself: CA bundles from the environment, and apps driven by
several event loops in turn (Starlette's TestClient starts one per request)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from examples.calc_api.app import create_app
from starlette.testclient import TestClient
from tests.support import client_settings

from ccflow import AsyncTokenClient, TokenClient, TokenValidator
from ccflow.authority import Authority, AuthorityServer, Fault
from ccflow.errors import (
    AuthorityUnreachableError,
    ConfigurationError,
    KeysUnavailableError,
    TokenRequestError,
)

if TYPE_CHECKING:
    from tests.caller.conftest import Sleeps
    from tests.conftest import FakeClock, YieldingTransport


TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def no_ca_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return monkeypatch


def build_all() -> None:
    """Construct each kind of object that makes its own HTTP client; the first error wins."""
    TokenClient(tenant_id=TENANT, client_id=CLIENT, client_secret="s3cret-value").close()
    AsyncTokenClient(tenant_id=TENANT, client_id=CLIENT, client_secret="s3cret-value")
    TokenValidator(tenant_id=TENANT, audience="api://calc-api")


@pytest.mark.parametrize("builder", ["TokenClient", "AsyncTokenClient", "TokenValidator"])
def test_a_missing_ssl_cert_file_is_a_configuration_error_at_construction(
    no_ca_env: pytest.MonkeyPatch, tmp_path: Path, builder: str
) -> None:
    missing = tmp_path / "nowhere.pem"
    no_ca_env.setenv("SSL_CERT_FILE", str(missing))
    build = {
        "TokenClient": lambda: TokenClient(
            tenant_id=TENANT, client_id=CLIENT, client_secret="s3cret-value"
        ),
        "AsyncTokenClient": lambda: AsyncTokenClient(
            tenant_id=TENANT, client_id=CLIENT, client_secret="s3cret-value"
        ),
        "TokenValidator": lambda: TokenValidator(tenant_id=TENANT, audience="api://calc-api"),
    }[builder]
    with pytest.raises(ConfigurationError) as caught:
        build()
    assert caught.value.setting == "SSL_CERT_FILE"
    assert str(caught.value) == f"SSL_CERT_FILE: no such file: {missing}"
    assert "s3cret-value" not in str(caught.value)


def test_from_env_names_ssl_cert_file_too(no_ca_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_ca_env.setenv("SSL_CERT_FILE", str(tmp_path / "nowhere.pem"))
    env = {"CCFLOW_TENANT_ID": TENANT, "CCFLOW_AUDIENCE": "api://calc-api"}
    with pytest.raises(ConfigurationError, match=r"^SSL_CERT_FILE: no such file"):
        TokenValidator.from_env(env)


def test_an_ssl_cert_file_that_is_not_pem_is_named(
    no_ca_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("this is not a certificate\n")
    no_ca_env.setenv("SSL_CERT_FILE", str(bundle))
    with pytest.raises(ConfigurationError) as caught:
        build_all()
    assert caught.value.setting == "SSL_CERT_FILE"
    assert str(caught.value).startswith(f"SSL_CERT_FILE: {bundle} is not a PEM CA bundle (")


def test_a_missing_ssl_cert_dir_is_named(no_ca_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_ca_env.setenv("SSL_CERT_DIR", str(tmp_path / "certs"))
    with pytest.raises(ConfigurationError) as caught:
        build_all()
    assert caught.value.setting == "SSL_CERT_DIR"
    assert str(caught.value) == f"SSL_CERT_DIR: no such directory: {tmp_path / 'certs'}"


def test_an_empty_ssl_cert_file_means_unset(no_ca_env: pytest.MonkeyPatch) -> None:
    # httpx itself treats an empty value as unset.
    no_ca_env.setenv("SSL_CERT_FILE", "")
    build_all()


@pytest.fixture(scope="module")
def tls_server() -> Iterator[AuthorityServer]:
    with AuthorityServer(tls=True) as server:
        yield server


def test_ssl_cert_file_is_trusted_by_the_clients_ccflow_makes(
    no_ca_env: pytest.MonkeyPatch, tls_server: AuthorityServer
) -> None:
    assert tls_server.ca_file is not None
    no_ca_env.setenv("SSL_CERT_FILE", str(tls_server.ca_file))
    authority = tls_server.authority
    client = authority.client("calc-client")
    api = authority.api("calc-api")
    with TokenClient(
        tenant_id=authority.tenant_id,
        authority_host=tls_server.url,
        client_id=client.client_id,
        client_secret=client.secret,
    ) as tokens:
        token = tokens.get_token(api.default_scope).token

    async def validate() -> str | None:
        async with TokenValidator(
            tenant_id=authority.tenant_id, authority_host=tls_server.url, audience=api.client_id
        ) as validator:
            return (await validator.validate(token)).client_id

    assert asyncio.run(validate()) == client.client_id


def test_without_ssl_cert_file_the_local_ca_is_not_trusted(
    no_ca_env: pytest.MonkeyPatch, tls_server: AuthorityServer
) -> None:
    # The control for the test above: the bundle really is what made the difference.
    authority = tls_server.authority
    client = authority.client("calc-client")
    with (
        TokenClient(
            tenant_id=authority.tenant_id,
            authority_host=tls_server.url,
            client_id=client.client_id,
            client_secret=client.secret,
            max_retries=0,
        ) as tokens,
        pytest.raises(AuthorityUnreachableError, match=r"certificate|TLS"),
    ):
        tokens.get_token(authority.api("calc-api").default_scope)


def test_an_untrusted_certificate_is_not_retried(
    no_ca_env: pytest.MonkeyPatch, tls_server: AuthorityServer
) -> None:
    # A certificate that did not verify was retried like a network fault (3 more handshakes
    # and backoff waits) although asking again cannot change it.
    authority = tls_server.authority
    client = authority.client("calc-client")
    waits: list[float] = []
    tokens = TokenClient(
        tenant_id=authority.tenant_id,
        authority_host=tls_server.url,
        client_id=client.client_id,
        client_secret=client.secret,
        max_retries=3,
        sleep=waits.append,
    )
    with pytest.raises(AuthorityUnreachableError) as caught:
        tokens.get_token(authority.api("calc-api").default_scope)
    tokens.close()
    message = str(caught.value)
    assert "TLS certificate that did not verify" in message
    assert "after 1 attempt(s)" in message
    assert "SSL_CERT_FILE" in message
    assert waits == []


def test_an_untrusted_certificate_is_not_retried_by_the_async_client(
    no_ca_env: pytest.MonkeyPatch, tls_server: AuthorityServer
) -> None:
    authority = tls_server.authority
    client = authority.client("calc-client")

    async def fetch() -> None:
        tokens = AsyncTokenClient(
            tenant_id=authority.tenant_id,
            authority_host=tls_server.url,
            client_id=client.client_id,
            client_secret=client.secret,
            max_retries=3,
        )
        try:
            await tokens.get_token(authority.api("calc-api").default_scope)
        finally:
            await tokens.aclose()

    with pytest.raises(AuthorityUnreachableError, match=r"did not verify .* after 1 attempt"):
        asyncio.run(fetch())


# --- several event loops in turn -------------------------------------------------------------


def test_testclient_per_request_loops_pick_up_a_key_rotation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Outside a ``with`` block, Starlette's TestClient runs each request in a new event loop.
    A JWKS refetch in a later loop must not reuse a connection or a lock of an earlier one
    (it did: the rotated key's first request was a 401 'could not be validated')."""
    with AuthorityServer() as server:
        authority = server.authority
        api = authority.api("calc-api")
        validator = TokenValidator(
            tenant_id=authority.tenant_id,
            authority_host=server.url,
            audience=api.client_id,
            allowed_clients=[authority.client("calc-client").client_id],
            jwks_cooldown=0,
        )
        client = TestClient(create_app(validator))
        statuses = []
        with caplog.at_level(logging.ERROR, logger="ccflow"):
            for i in range(4):
                if i in (1, 3):
                    authority.rotate_keys()  # the next token's kid is unknown: a refetch
                token = authority.mint()
                headers = {"Authorization": f"Bearer {token}"}
                statuses.append(client.get("/calc/v1/add/1/2", headers=headers).status_code)
        assert statuses == [200, 200, 200, 200]
        assert authority.hits["jwks"] == 3
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_async_token_client_fetches_again_in_a_later_loop() -> None:
    with AuthorityServer() as server:
        authority = server.authority
        client = authority.client("calc-client")
        tokens = AsyncTokenClient(
            tenant_id=authority.tenant_id,
            authority_host=server.url,
            client_id=client.client_id,
            client_secret=client.secret,
            max_retries=0,
        )
        api = authority.api("calc-api")
        first = asyncio.run(tokens.get_token(api.default_scope))
        # Another spelling of the scope is another cache entry: a second POST, in a new loop.
        second = asyncio.run(tokens.get_token(f"{api.client_id}/.default"))
        assert first.token != second.token
        assert authority.hits["token"] == 2


def test_contended_fetches_in_two_loops_in_turn(
    clock: FakeClock, authority: Authority, yielding_transport: type[YieldingTransport]
) -> None:
    """The single-flight lock is per loop: a second loop's contended fetch must not meet the
    first loop's lock ('is bound to a different event loop')."""
    api = authority.api("calc-api")

    async def burst(validator: TokenValidator) -> set[str | None]:
        verdicts = await asyncio.gather(*(validator.validate(authority.mint()) for _ in range(20)))
        return {v.client_id for v in verdicts}

    async def make() -> TokenValidator:
        return TokenValidator(
            tenant_id=authority.tenant_id,
            authority_host=authority.host,
            audience=api.client_id,
            http_client=httpx.AsyncClient(transport=yielding_transport(authority.handle)),
            clock=clock,
        )

    validator = asyncio.run(make())
    assert asyncio.run(burst(validator)) == {authority.client("calc-client").client_id}
    clock.advance(60)  # past the refetch cooldown
    authority.rotate_keys()
    assert asyncio.run(burst(validator)) == {authority.client("calc-client").client_id}
    assert authority.hits["jwks"] == 2


def test_a_lock_held_by_a_loop_closed_mid_fetch_does_not_block_the_next_loop(
    clock: FakeClock, authority: Authority
) -> None:
    hang = {"on": True}

    class Hanging(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await request.aread()
            if hang["on"]:
                await asyncio.Event().wait()  # never answers
            return authority.handle(request)

    validator = TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=authority.api("calc-api").client_id,
        http_client=httpx.AsyncClient(transport=Hanging()),
        clock=clock,
    )
    first = asyncio.new_event_loop()
    stuck = first.create_task(validator.validate(authority.mint()))
    first.run_until_complete(asyncio.sleep(0.05))
    assert not stuck.done()
    first.close()  # the fetch never finishes and never releases its lock
    hang["on"] = False

    async def later() -> str | None:
        return (await asyncio.wait_for(validator.validate(authority.mint()), 5)).client_id

    assert asyncio.run(later()) == authority.client("calc-client").client_id


def test_the_api_side_names_an_untrusted_certificate(
    no_ca_env: pytest.MonkeyPatch, tls_server: AuthorityServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The validator's discovery/JWKS fetch logged only "ConnectError" for a private CA.
    authority = tls_server.authority
    api = authority.api("calc-api")

    async def validate() -> None:
        async with TokenValidator(
            tenant_id=authority.tenant_id, authority_host=tls_server.url, audience=api.client_id
        ) as validator:
            await validator.validate(authority.mint())

    with caplog.at_level(logging.WARNING, logger="ccflow"), pytest.raises(KeysUnavailableError):
        asyncio.run(validate())
    assert "TLS certificate did not verify" in caplog.text
    assert "SSL_CERT_FILE" in caplog.text


def _raise_for_status(response: httpx.Response) -> None:
    response.raise_for_status()  # the event hook httpx's documentation suggests


async def _araise_for_status(response: httpx.Response) -> None:
    response.raise_for_status()


def test_a_raise_for_status_hook_on_a_shared_client_does_not_break_retries_or_refresh(
    authority: Authority, clock: FakeClock, scope: str, sleeps: Sleeps
) -> None:
    # The hook's httpx.HTTPStatusError escaped get_token(): a 503 was not retried, a failed
    # proactive refresh raised although a valid token was cached, and the error was not a
    # ccflow one (its .request holds the secret in its body).
    http = httpx.Client(
        transport=authority.transport(), event_hooks={"response": [_raise_for_status]}
    )
    tc = TokenClient(
        **client_settings(authority), http_client=http, max_retries=1, clock=clock, sleep=sleeps
    )
    with http, tc:
        authority.set_fault("token", Fault(status=503, retry_after="1", times=1))
        first = tc.get_token(scope)
        assert sleeps == [1.0]
        clock.advance(3599 - 200)  # inside the refresh margin: a proactive refresh
        authority.set_fault("token", Fault(status=503))
        assert tc.get_token(scope) is first
        authority.clear_fault("token")
        authority.set_fault("token", Fault(status=400))
        clock.advance(400)  # expired: the refusal reaches the caller, as ccflow's error
        with pytest.raises(TokenRequestError) as info:
            tc.get_token(scope)
    assert info.value.status_code == 400
    assert info.value.aadsts_code == 90033  # the in-process answer was read before the hook


def test_an_answer_a_hook_left_unread_is_explained_not_called_empty(scope: str) -> None:
    # Over a real connection httpx closes the answer unread when a hook raises for it.
    def unread(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, stream=httpx.ByteStream(b'{"error": "invalid_client"}'))

    http = httpx.Client(
        transport=httpx.MockTransport(unread), event_hooks={"response": [_raise_for_status]}
    )
    with (
        http,
        TokenClient(
            client_id="c",
            client_secret="s3cret",
            token_endpoint="https://x.test/token",
            http_client=http,
        ) as tc,
        pytest.raises(TokenRequestError) as info,
    ):
        tc.get_token(scope)
    assert info.value.status_code == 400
    assert "event hook of the http_client" in str(info.value)
    assert "empty" not in str(info.value)


@pytest.mark.anyio
async def test_a_raise_for_status_hook_on_a_shared_async_client_does_not_break_retries(
    authority: Authority, clock: FakeClock, scope: str, sleeps: Sleeps
) -> None:
    http = httpx.AsyncClient(
        transport=authority.transport(), event_hooks={"response": [_araise_for_status]}
    )
    tc = AsyncTokenClient(
        **client_settings(authority),
        http_client=http,
        max_retries=1,
        clock=clock,
        sleep=sleeps.asleep,
    )
    async with http, tc:
        authority.set_fault("token", Fault(status=429, retry_after="2", times=1))
        first = await tc.get_token(scope)
        assert sleeps == [2.0]
        clock.advance(3599 - 200)
        authority.set_fault("token", Fault(status=500))
        assert await tc.get_token(scope) is first
