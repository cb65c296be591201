"""ClientAssertion and FederatedTokenFile (workload identity): when a new assertion is asked
for or read, rotation of a projected token file, errors, and secrecy; on the local authority."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import gc
import json
import logging
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import START, certificate_authority, jwt_with

from ccflow import (
    AsyncTokenClient,
    ClientAssertion,
    ConfigurationError,
    Credential,
    CredentialError,
    TokenClient,
)
from ccflow.authority import JWT_BEARER, Authority
from ccflow.credentials import FederatedTokenFile
from ccflow.testing import CertificateMaterial, client_assertion

NOW = START
ENDPOINT = "https://login.test/t/oauth2/v2.0/token"


def sent(credential: Credential, now: float, client_id: str = "cid") -> str:
    fields = credential.request_fields(
        client_id=client_id, token_endpoint=ENDPOINT, auth_method="client_secret_post", now=now
    )
    form = dict(fields.form)
    assert form["client_id"] == client_id
    assert form["client_assertion_type"] == JWT_BEARER
    return form["client_assertion"]


class Source:
    """A callable assertion source that counts its calls."""

    def __init__(self, make: Callable[[int], str]) -> None:
        self.calls = 0
        self.make = make

    def __call__(self) -> str:
        self.calls += 1
        return self.make(self.calls)


# --- ClientAssertion --------------------------------------------------------------------------


def test_string_is_sent_as_given() -> None:
    value = jwt_with(NOW + 600)
    assert sent(ClientAssertion(value), NOW) == value


def test_expired_string_fails_clearly() -> None:
    credential = ClientAssertion(jwt_with(NOW + 10))
    with pytest.raises(CredentialError, match="expired") as info:
        sent(credential, NOW + 10)
    assert "eyJ" not in str(info.value)


def test_callable_is_called_once_and_reused_until_near_expiry() -> None:
    source = Source(lambda n: jwt_with(NOW + 600 * n, tag=str(n)))
    credential = ClientAssertion(source)
    first = sent(credential, NOW)
    assert sent(credential, NOW + 539) == first
    assert source.calls == 1
    assert sent(credential, NOW + 540) != first
    assert source.calls == 2


def test_threads_needing_an_assertion_at_once_call_the_callable_once() -> None:
    barrier = threading.Barrier(8)

    def slow(n: int) -> str:
        time.sleep(0.05)  # an OIDC source taking its time while the others wait
        return jwt_with(NOW + 600, tag=str(n))

    source = Source(slow)
    credential = ClientAssertion(source)

    def one() -> str:
        barrier.wait()
        return sent(credential, NOW)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assertions = {f.result() for f in [pool.submit(one) for _ in range(8)]}
    assert (len(assertions), source.calls) == (1, 1)


def test_callable_without_readable_expiry_is_called_every_time() -> None:
    source = Source(lambda n: f"opaque-{n}")
    credential = ClientAssertion(source)
    assert [sent(credential, NOW), sent(credential, NOW + 1)] == ["opaque-1", "opaque-2"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: "", "empty"),
        (lambda: "   ", "empty"),
        (lambda: None, "returned NoneType, not a string"),  # was "an empty value"
        (lambda: b"eyJ.eyJ.sig", "returned bytes, not a string"),
        (lambda: jwt_with(NOW - 1), "expired"),
        (lambda: 1 / 0, "failed: ZeroDivisionError"),
    ],
    ids=["empty", "blank", "none", "bytes", "expired", "raises"],
)
def test_bad_callable_results(make: Callable[[], Any], message: str) -> None:
    with pytest.raises(CredentialError, match=message):
        sent(ClientAssertion(make), NOW)


@pytest.mark.parametrize("value", ["", "  ", 42, None])
def test_bad_constructor_argument(value: Any) -> None:
    with pytest.raises(ConfigurationError):
        ClientAssertion(value)


def test_repr_hides_the_assertion_and_pickling_is_refused() -> None:
    value = jwt_with(NOW + 600)
    credential = ClientAssertion(value)
    assert repr(credential) == str(credential) == "ClientAssertion(<str>)"
    assert repr(ClientAssertion(lambda: value)) == "ClientAssertion(<callable>)"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(credential)


@pytest.fixture
def authority(cert: CertificateMaterial) -> Authority:
    return certificate_authority(cert)


def test_callable_assertion_gets_a_token(authority: Authority, cert: CertificateMaterial) -> None:
    client_id = authority.client("calc-client").client_id

    def make() -> str:
        return client_assertion(
            cert, client_id=client_id, audience=authority.token_endpoint, now=NOW
        )

    with TokenClient(
        client_id=client_id,
        credential=ClientAssertion(make),
        token_endpoint=authority.token_endpoint,
        http_client=httpx.Client(transport=authority.transport()),
        clock=lambda: NOW,
    ) as client:
        token = client.get_token(authority.api("calc-api").default_scope)
    assert token.expires_on == int(NOW) + 3599


@pytest.mark.anyio
async def test_async_client_calls_the_callable_in_a_thread(
    authority: Authority, cert: CertificateMaterial
) -> None:
    import threading

    client_id = authority.client("calc-client").client_id
    main = threading.get_ident()
    threads: list[int] = []

    def make() -> str:
        threads.append(threading.get_ident())
        return client_assertion(
            cert, client_id=client_id, audience=authority.token_endpoint, now=NOW
        )

    async with AsyncTokenClient(
        client_id=client_id,
        credential=ClientAssertion(make),
        token_endpoint=authority.token_endpoint,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=lambda: NOW,
    ) as client:
        await client.get_token(authority.api("calc-api").default_scope)
    assert len(threads) == 1
    assert threads[0] != main


def failing_after_first(authority: Authority, cert: CertificateMaterial) -> Source:
    """A source that makes one good assertion, then fails (its identity provider went down)."""
    client_id = authority.client("calc-client").client_id

    def make(call: int) -> str:
        if call > 1:
            raise RuntimeError("identity provider unavailable")
        return client_assertion(
            cert, client_id=client_id, audience=authority.token_endpoint, now=NOW
        )

    return Source(make)


def test_a_failing_credential_during_a_proactive_refresh_serves_the_cached_token(
    authority: Authority, cert: CertificateMaterial
) -> None:
    source = failing_after_first(authority, cert)
    now = [NOW]
    with TokenClient(
        client_id=authority.client("calc-client").client_id,
        credential=ClientAssertion(source),
        token_endpoint=authority.token_endpoint,
        http_client=httpx.Client(transport=authority.transport()),
        clock=lambda: now[0],
    ) as client:
        scope = authority.api("calc-api").default_scope
        first = client.get_token(scope)
        now[0] = NOW + 3300  # refresh due; the token is valid for 299 s more
        assert client.get_token(scope) is first
        assert source.calls == 2
        now[0] = first.expires_on  # expired: now the credential's error must surface
        with pytest.raises(CredentialError, match="failed"):
            client.get_token(scope)


@pytest.mark.anyio
async def test_a_failing_credential_during_a_proactive_refresh_serves_the_cached_token_async(
    authority: Authority, cert: CertificateMaterial
) -> None:
    source = failing_after_first(authority, cert)
    now = [NOW]
    async with AsyncTokenClient(
        client_id=authority.client("calc-client").client_id,
        credential=ClientAssertion(source),
        token_endpoint=authority.token_endpoint,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=lambda: now[0],
    ) as client:
        scope = authority.api("calc-api").default_scope
        first = await client.get_token(scope)
        now[0] = NOW + 3300
        assert await client.get_token(scope) is first
        assert source.calls == 2
        now[0] = first.expires_on
        with pytest.raises(CredentialError, match="failed"):
            await client.get_token(scope)


# --- FederatedTokenFile ------------------------------------------------------------------------


def read_then_removed(path: Path, value: str) -> FederatedTokenFile:
    """A token-file credential that read ``value`` from ``path`` at NOW; the file is then gone."""
    path.write_text(value)
    credential = FederatedTokenFile(path)
    assert sent(credential, NOW) == value
    path.unlink()
    return credential


def test_token_file_rotation_is_picked_up_within_the_reread_interval(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(jwt_with(NOW + 3600, "one") + "\n")
    credential = FederatedTokenFile(path)
    first = sent(credential, NOW)
    path.write_text(jwt_with(NOW + 3900, "two"))  # the platform rotated the projected token
    assert sent(credential, NOW + 299) == first
    assert sent(credential, NOW + 300) == jwt_with(NOW + 3900, "two")


def test_token_file_is_reread_when_the_held_token_nears_expiry(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(jwt_with(NOW + 100, "one"))
    credential = FederatedTokenFile(path)
    sent(credential, NOW)
    path.write_text(jwt_with(NOW + 3700, "two"))
    assert sent(credential, NOW + 39) == jwt_with(NOW + 100, "one")
    assert sent(credential, NOW + 40) == jwt_with(NOW + 3700, "two")


def test_failed_reread_keeps_a_still_good_token_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    value = jwt_with(NOW + 3600)
    credential = read_then_removed(tmp_path / "token", value)
    with caplog.at_level(logging.WARNING, logger="ccflow"):
        assert sent(credential, NOW + 300) == value
    assert "cannot read" in caplog.text
    assert value not in caplog.text


@pytest.mark.parametrize("content", ["", "\n", "not-a-jwt-but-expired-below"])
def test_a_reread_giving_an_unusable_token_keeps_a_still_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    # A file caught mid-rotation (truncated, or still the old token now expired) is a failed
    # re-read like a missing file: the held token, good for 3300 s more, must be kept.
    path = tmp_path / "token"
    value = jwt_with(NOW + 3600)
    path.write_text(value)
    credential = FederatedTokenFile(path)
    sent(credential, NOW)
    path.write_text(jwt_with(NOW + 100, "stale") if content.startswith("not") else content)
    with caplog.at_level(logging.WARNING, logger="ccflow"):
        assert sent(credential, NOW + 300) == value
    assert "still using the assertion read before" in caplog.text


def test_after_a_failed_reread_the_next_request_reads_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "token"
    credential = read_then_removed(path, jwt_with(NOW + 3600, "one"))
    assert sent(credential, NOW + 300) == jwt_with(NOW + 3600, "one")
    path.write_text(jwt_with(NOW + 3900, "two"))
    assert sent(credential, NOW + 301) == jwt_with(NOW + 3900, "two")


@pytest.mark.parametrize(("later", "kept"), [(300, True), (3539, True), (3540, False)])
def test_a_failed_reread_keeps_the_token_until_a_minute_before_it_expires(
    tmp_path: Path, later: float, kept: bool
) -> None:
    value = jwt_with(NOW + 3600)
    credential = read_then_removed(tmp_path / "token", value)
    if kept:
        assert sent(credential, NOW + later) == value
    else:
        with pytest.raises(CredentialError, match="cannot read federated token file"):
            sent(credential, NOW + later)


def test_failed_read_without_a_good_token_is_an_error(tmp_path: Path) -> None:
    credential = read_then_removed(tmp_path / "token", jwt_with(NOW + 100))
    with pytest.raises(CredentialError, match="cannot read federated token file"):
        sent(credential, NOW + 60)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("", "empty"), ("\n", "empty"), (b"\xff\xfe", "not text")],
)
def test_unusable_token_file(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "token"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(CredentialError, match=message):
        sent(FederatedTokenFile(path), NOW)


def test_expired_token_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(jwt_with(NOW - 5))
    with pytest.raises(CredentialError, match="expired"):
        sent(FederatedTokenFile(path), NOW)


@pytest.mark.parametrize("interval", [0, -1, True, "300"])
def test_bad_reread_interval(tmp_path: Path, interval: Any) -> None:
    with pytest.raises(ConfigurationError):
        FederatedTokenFile(tmp_path / "t", reread_interval=interval)


def test_token_file_repr_shows_the_path_only(tmp_path: Path) -> None:
    path = tmp_path / "token"
    value = jwt_with(NOW + 600)
    path.write_text(value)
    credential = FederatedTokenFile(path)
    sent(credential, NOW)
    assert repr(credential) == f"FederatedTokenFile({str(path)!r})"
    assert value not in repr(credential)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(credential)


def test_token_file_gets_a_token_from_the_authority(
    authority: Authority, cert: CertificateMaterial, tmp_path: Path
) -> None:
    # The local authority trusts certificate-signed assertions; a projected token signed the
    # same way stands in for the federated token here.
    client_id = authority.client("calc-client").client_id
    path = tmp_path / "token"
    path.write_text(
        client_assertion(cert, client_id=client_id, audience=authority.token_endpoint, now=NOW)
    )
    with TokenClient(
        client_id=client_id,
        credential=FederatedTokenFile(path),
        token_endpoint=authority.token_endpoint,
        http_client=httpx.Client(transport=authority.transport()),
        clock=lambda: NOW,
    ) as client:
        assert client.get_token(authority.api("calc-api").default_scope).token


def test_a_token_given_where_the_token_file_path_belongs_is_refused_unquoted() -> None:
    # repr(), the from_env DEBUG line and "cannot read federated token file '<path>'" all
    # quoted the path: the assertion itself when the variable held the token.
    token = jwt_with(NOW + 3600)
    with pytest.raises(ConfigurationError, match="path of the token file") as info:
        FederatedTokenFile(token)
    assert token not in str(info.value)
    assert info.value.setting == "AZURE_FEDERATED_TOKEN_FILE"


def test_an_async_callable_is_explained_and_its_coroutine_closed() -> None:
    # It "returned coroutine", and the never-awaited coroutine warned at garbage collection.
    async def fetch() -> str:
        return jwt_with(NOW + 3600)

    with pytest.raises(CredentialError, match="async function"):
        sent(ClientAssertion(fetch), NOW)  # type: ignore[arg-type]
    gc.collect()  # a RuntimeWarning here fails the test (filterwarnings=error)


TIMEOUT = 10.0


def _assertion(exp: float) -> str:

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part({'exp': int(exp)})}.c2ln"


@pytest.mark.anyio
async def test_async_fetches_of_different_scopes_ask_the_assertion_callable_once() -> None:
    import time

    from ccflow import AsyncTokenClient, ClientAssertion

    calls: list[int] = []

    def assertion() -> str:
        calls.append(1)
        threading.Event().wait(0.3)  # an OIDC token endpoint taking its time
        return _assertion(time.time() + 3600)

    def token_endpoint(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"access_token": "t", "expires_in": 3600, "token_type": "Bearer"}
        )

    async with AsyncTokenClient(
        client_id="app",
        credential=ClientAssertion(assertion),
        token_endpoint="https://idp.test/token",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(token_endpoint)),
    ) as tc:
        await asyncio.wait_for(
            asyncio.gather(tc.get_token("api://a/.default"), tc.get_token("api://b/.default")),
            TIMEOUT,
        )
    assert len(calls) == 1
