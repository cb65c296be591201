"""TokenClient on the local authority: caching, refresh, retries, errors, configuration."""

from __future__ import annotations

import json
import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.support import START

import ccflow
from ccflow import (
    AccessToken,
    AsyncTokenClient,
    AuthorityUnreachableError,
    CacheEntry,
    ClientSecret,
    ConfigurationError,
    CredentialError,
    MemoryTokenCache,
    TokenClient,
    TokenKey,
    TokenRequestError,
)
from ccflow.authority import Authority, Fault
from ccflow.credentials import (
    ClientAssertion,
    FederatedTokenFile,
    ManagedIdentity,
    RequestFields,
)

if TYPE_CHECKING:
    from tests.caller.conftest import AsyncClientFactory, ClientFactory
    from tests.conftest import FakeClock


SCOPE = "api://calc-api/.default"


@pytest.fixture
def client(sync_client: ClientFactory) -> Iterator[TokenClient]:
    tc, _ = sync_client()
    yield tc
    tc.close()


def test_get_token_fetches_a_token(client: TokenClient, authority: Authority, scope: str) -> None:
    token = client.get_token(scope)
    assert isinstance(token, AccessToken)
    assert token.token.count(".") == 2
    assert token.token_type == "Bearer"
    assert token.expires_on == int(START) + 3599
    assert token.scopes == (scope,)
    assert authority.hits["token"] == 1


def test_second_call_is_served_from_cache(
    client: TokenClient, authority: Authority, scope: str
) -> None:
    first = client.get_token(scope)
    assert client.get_token(scope) is first
    assert authority.hits["token"] == 1


def test_bare_resource_is_completed_to_default(
    client: TokenClient, authority: Authority, scope: str
) -> None:
    resource = scope.removesuffix("/.default")
    token = client.get_token(resource)
    assert token.scopes == (scope,)
    assert client.get_token(scope) is token  # same cache entry
    assert authority.hits["token"] == 1


def test_different_scopes_have_their_own_tokens(
    client: TokenClient, authority: Authority, scope: str
) -> None:
    by_uri = client.get_token(scope)
    by_id = client.get_token(authority.api("calc-api").client_id)
    assert by_uri.token != by_id.token
    assert authority.hits["token"] == 2


@pytest.mark.parametrize(
    ("margin", "lifetime", "still_cached_at", "refetched_at"),
    [
        (300, 3599, 3298, 3299),  # default margin
        (600, 3599, 2998, 2999),  # configured margin
        (300, 7200, 3599, 3600),  # >= 2 h: half-life
        (300, 86400, 43199, 43200),
    ],
)
def test_refresh_timing(
    sync_client: ClientFactory,
    clock: FakeClock,
    margin: int,
    lifetime: int,
    still_cached_at: int,
    refetched_at: int,
) -> None:
    authority = Authority(clock=clock, token_lifetime=lifetime)
    tc, _ = sync_client(authority, refresh_margin=margin)
    scope = authority.api("calc-api").default_scope
    first = tc.get_token(scope)
    clock.advance(still_cached_at)
    assert tc.get_token(scope) is first
    clock.advance(refetched_at - still_cached_at)
    assert tc.get_token(scope) is not first
    assert authority.hits["token"] == 2


def test_refresh_in_from_the_server_is_honoured(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        response = authority.handle(request)
        body = json.loads(response.content)
        body["refresh_in"] = "600"
        return httpx.Response(response.status_code, json=body)

    tc, _ = sync_client(transport=httpx.MockTransport(handler))
    scope = authority.api("calc-api").default_scope
    first = tc.get_token(scope)
    clock.advance(599)
    assert tc.get_token(scope) is first
    clock.advance(1)
    assert tc.get_token(scope) is not first


def test_failed_refresh_serves_the_valid_token_and_tries_again_later(
    client: TokenClient, authority: Authority, clock: FakeClock, scope: str
) -> None:
    first = client.get_token(scope)
    authority.set_fault("token", Fault(status=503))
    clock.advance(3300)  # past the margin, before expiry
    assert client.get_token(scope) is first
    assert authority.hits["token"] == 2
    clock.advance(29)
    assert client.get_token(scope) is first
    assert authority.hits["token"] == 2  # no hammering while it is down
    clock.advance(1)
    assert client.get_token(scope) is first
    assert authority.hits["token"] == 3
    authority.clear_fault("token")
    clock.advance(30)
    assert client.get_token(scope) is not first


def test_failure_after_expiry_raises(
    client: TokenClient, authority: Authority, clock: FakeClock, scope: str
) -> None:
    client.get_token(scope)
    authority.set_fault("token", Fault(status=503))
    clock.advance(3599)
    with pytest.raises(TokenRequestError):
        client.get_token(scope)


@pytest.mark.parametrize(
    ("fault", "waits"),
    [
        (Fault(status=429, retry_after="3", times=1), [3.0]),
        (Fault(status=429, retry_after="Thu, 01 Jan 2026 00:00:05 GMT", times=1), [5.0]),
        (Fault(status=503, times=2), "two"),
        (Fault(drop=True, times=1), "one"),
        (Fault(timeout=True, times=1), "one"),
        (Fault(status=502, body=b"<html>Bad gateway</html>", times=1), "one"),
    ],
)
def test_transient_failures_are_retried(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
    fault: Fault,
    waits: object,
) -> None:
    tc, sleeps = sync_client()
    authority.set_fault("token", fault)
    assert tc.get_token(scope).token
    if isinstance(waits, list):
        assert sleeps == waits
    else:
        assert len(sleeps) == {"one": 1, "two": 2}[str(waits)]
        assert all(0 < s <= 8 for s in sleeps)


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        (Fault(status=503), TokenRequestError, "HTTP 503"),
        (Fault(status=429, retry_after="1"), TokenRequestError, "HTTP 429"),
        (Fault(drop=True), AuthorityUnreachableError, "could not connect"),
        (Fault(timeout=True), AuthorityUnreachableError, "timed out"),
        (Fault(status=502, body=b"<html/>"), TokenRequestError, "HTML page"),
    ],
)
def test_gives_up_after_max_retries_with_the_last_error(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
    fault: Fault,
    error: type[Exception],
    match: str,
) -> None:
    tc, sleeps = sync_client(max_retries=2)
    authority.set_fault("token", fault)
    with pytest.raises(error, match=match):
        tc.get_token(scope)
    assert authority.hits["token"] == 3
    assert len(sleeps) == 2


def test_oauth_errors_are_not_retried(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, sleeps = sync_client(client_secret="wrong")
    with pytest.raises(TokenRequestError):
        tc.get_token(scope)
    assert authority.hits["token"] == 1
    assert sleeps == []


def test_wrong_secret_explains_7000215(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client(client_secret="wrong")
    with pytest.raises(TokenRequestError, match="wrong or expired") as info:
        tc.get_token(scope)
    assert info.value.aadsts_code == 7000215
    assert info.value.status_code == 401
    assert info.value.trace_id


def test_unknown_client_explains_700016(authority: Authority, clock: FakeClock, scope: str) -> None:
    tc = TokenClient(
        client_id="00000000-0000-0000-0000-00000000dead",
        client_secret="x",
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        http_client=httpx.Client(transport=authority.transport()),
        clock=clock,
    )
    with pytest.raises(TokenRequestError, match="was not found in tenant") as info:
        tc.get_token(scope)
    assert info.value.aadsts_code == 700016


def test_unknown_resource_explains_500011(client: TokenClient) -> None:
    with pytest.raises(TokenRequestError, match=r"completed from api://nope\)") as info:
        client.get_token("api://nope")
    assert info.value.aadsts_code == 500011


def test_two_resources_explain_70011(client: TokenClient, scope: str) -> None:
    with pytest.raises(TokenRequestError, match="one resource per request") as info:
        client.get_token(scope, "api://other/.default")
    assert info.value.aadsts_code == 70011


def test_unknown_tenant_explains_90002(authority: Authority, clock: FakeClock, scope: str) -> None:
    app = authority.client("calc-client")
    tc = TokenClient(
        client_id=app.client_id,
        client_secret=app.secret,
        tenant_id="nosuch.onmicrosoft.com",
        authority_host=authority.host,
        http_client=httpx.Client(transport=authority.transport()),
        clock=clock,
    )
    with pytest.raises(TokenRequestError, match=r"tenant nosuch\.onmicrosoft\.com was not found"):
        tc.get_token(scope)


def test_client_secret_basic_works_with_special_characters(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    assert set("+/=~") <= set(authority.client("calc-client").secret or "")
    tc, _ = sync_client(auth_method="client_secret_basic")
    assert tc.get_token(scope).token


def test_credential_argument_takes_a_client_secret(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    secret = authority.client("calc-client").secret
    assert secret is not None
    tc, _ = sync_client(client_secret=None, credential=ClientSecret(secret))
    assert tc.get_token(scope).token


def test_token_endpoint_targets_any_server(
    authority: Authority, clock: FakeClock, scope: str
) -> None:
    app = authority.client("calc-client")
    tc = TokenClient(
        client_id=app.client_id,
        client_secret=app.secret,
        token_endpoint=authority.token_endpoint,
        http_client=httpx.Client(transport=authority.transport()),
        clock=clock,
    )
    assert tc.token_endpoint == authority.token_endpoint
    assert tc.get_token(scope.removesuffix("/.default")).scopes == (scope,)


def _recording_client(token_endpoint: str, **options: Any) -> tuple[TokenClient, list[bytes]]:
    """A client of an endpoint answering every POST with a 60 s token, and the bodies posted."""
    posts: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posts.append(request.content)
        return httpx.Response(200, json={"access_token": "t", "expires_in": 60})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    tc = TokenClient(
        client_id="c", client_secret="s", token_endpoint=token_endpoint, http_client=http, **options
    )
    return tc, posts


def test_expired_tokens_are_swept_out_once_many_scopes_are_cached(clock: FakeClock) -> None:
    # The sweep bounds memory, which only the cache itself shows: len(cache) reads it.
    cache = MemoryTokenCache(max_entries=4)
    tc, posts = _recording_client("https://idp.example/token", clock=clock, cache=cache)
    for n in range(4):
        tc.get_token(f"scope-{n}")
    clock.advance(60)  # all four expired
    tc.get_token("scope-4")
    assert len(cache) == 1
    assert tc.cache is cache
    for n in range(5, 12):
        tc.get_token(f"scope-{n}")  # valid tokens are kept: the cap only sweeps expired ones
    assert len(cache) == 8
    fetched = len(posts)
    for n in range(4, 12):
        tc.get_token(f"scope-{n}")
    assert len(posts) == fetched  # and served from it


def test_non_azure_endpoint_sends_scopes_unchanged() -> None:
    tc, seen = _recording_client("http://127.0.0.1:9/oauth/token")
    assert tc.get_token("read", "write").scopes == ("read", "write")
    assert b"scope=read+write" in seen[0]


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"client_secret": "s", "tenant_id": "t", "client_id": ""}, "client_id"),
        ({"client_id": "c", "tenant_id": "t"}, "credential"),
        (
            {
                "client_id": "c",
                "tenant_id": "t",
                "client_secret": "s",
                "credential": ClientSecret("s"),
            },
            "credential",
        ),
        ({"client_id": "c", "client_secret": "s"}, "tenant_id"),
        ({"client_id": "c", "client_secret": "s", "tenant_id": "a/b"}, "tenant_id"),
        (
            {
                "client_id": "c",
                "client_secret": "s",
                "tenant_id": "t",
                "token_endpoint": "https://x/token",
            },
            "token_endpoint",
        ),
        (
            {
                "client_id": "c",
                "client_secret": "s",
                "token_endpoint": "http://login.example.com/token",
            },
            "token_endpoint",
        ),
        (
            {
                "client_id": "c",
                "client_secret": "s",
                "tenant_id": "t",
                "authority_host": "http://login.example.com",
            },
            "authority_host",
        ),
        (
            {
                "client_id": "c",
                "client_secret": "s",
                "tenant_id": "t",
                "auth_method": "tls_client_auth",
            },
            "auth_method",
        ),
        (
            {"client_id": "c", "client_secret": "s", "tenant_id": "t", "max_retries": -1},
            "max_retries",
        ),
        (
            {"client_id": "c", "client_secret": "s", "tenant_id": "t", "refresh_margin": -5},
            "refresh_margin",
        ),
        ({"client_id": "c", "client_secret": "", "tenant_id": "t"}, "client_secret"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenClient(**kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"tenant_id": 5}, "tenant_id"),
        ({"tenant_id": "a\nb"}, "tenant_id"),
        ({"tenant_id": "t", "authority_host": 5}, "authority_host"),
        ({"tenant_id": "t", "authority_host": "https://login.example.com?x=1"}, "authority_host"),
        ({"token_endpoint": 5}, "token_endpoint"),
        ({"token_endpoint": "https://login.example.com:99999/token"}, "token_endpoint"),
        ({"token_endpoint": " https://login.example.com/token"}, "token_endpoint"),
    ],
)
def test_wrong_types_and_unusable_urls_are_configuration_errors(
    kwargs: dict[str, object], setting: str
) -> None:
    # These were AttributeErrors from the constructor, or httpx InvalidURL/ValueError raised
    # by every get_token() call.
    with pytest.raises(ConfigurationError) as info:
        TokenClient(client_id="c", client_secret="s", **kwargs)  # type: ignore[arg-type]
    assert info.value.setting == setting


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/t/oauth2/v2.0/token",
        "http://localhost/token",
        "http://[::1]:1/token",
        "https://auth.example.com/token",
    ],
)
def test_loopback_http_and_https_are_accepted(url: str) -> None:
    assert TokenClient(client_id="c", client_secret="s", token_endpoint=url).token_endpoint == url


def test_authority_host_defaults_to_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us")
    tc = TokenClient(client_id="c", client_secret="s", tenant_id="t")
    assert tc.token_endpoint == "https://login.microsoftonline.us/t/oauth2/v2.0/token"


def test_authority_host_defaults_to_public_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    tc = TokenClient(client_id="c", client_secret="s", tenant_id="t")
    assert tc.token_endpoint == "https://login.microsoftonline.com/t/oauth2/v2.0/token"


ENV = {"AZURE_CLIENT_ID": "cid", "AZURE_CLIENT_SECRET": "sec", "AZURE_TENANT_ID": "tid"}


@pytest.mark.parametrize(
    ("extra", "endpoint"),
    [
        ({}, "https://login.microsoftonline.com/tid/oauth2/v2.0/token"),
        (
            {"AZURE_AUTHORITY_HOST": "login.chinacloudapi.cn"},
            "https://login.chinacloudapi.cn/tid/oauth2/v2.0/token",
        ),
        ({"CCFLOW_TOKEN_ENDPOINT": "https://idp.example/token"}, "https://idp.example/token"),
        (
            {"CCFLOW_TOKEN_ENDPOINT": "https://idp.example/token", "AZURE_TENANT_ID": ""},
            "https://idp.example/token",
        ),
    ],
)
def test_from_env(extra: dict[str, str], endpoint: str) -> None:
    tc = TokenClient.from_env(environ={**ENV, **extra})
    assert tc.client_id == "cid"
    assert tc.token_endpoint == endpoint


@pytest.mark.parametrize(
    ("missing", "setting"),
    [
        ("AZURE_CLIENT_ID", "AZURE_CLIENT_ID"),
        ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_SECRET"),
        ("AZURE_TENANT_ID", "AZURE_TENANT_ID"),
    ],
)
def test_from_env_names_the_missing_variable(missing: str, setting: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(ConfigurationError, match=missing) as info:
        TokenClient.from_env(environ=env)
    assert info.value.setting == setting


@pytest.mark.parametrize(
    ("env", "names", "setting"),
    [
        ({}, ["AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"], "AZURE_CLIENT_ID"),
        ({"AZURE_CLIENT_ID": "cid"}, ["AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"], "AZURE_TENANT_ID"),
        ({"AZURE_TENANT_ID": "tid"}, ["AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"], "AZURE_CLIENT_ID"),
        ({"AZURE_CLIENT_SECRET": "sec"}, ["AZURE_CLIENT_ID", "AZURE_TENANT_ID"], "AZURE_CLIENT_ID"),
    ],
)
def test_from_env_names_every_missing_variable_at_once(
    env: dict[str, str], names: list[str], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenClient.from_env(environ=env)
    for name in names:
        assert name in str(info.value)
    assert info.value.setting == setting
    assert "sec" not in str(info.value).replace("AZURE_CLIENT_SECRET", "")


def test_a_bad_authority_host_from_the_environment_is_named_as_such(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://login.example")
    with pytest.raises(ConfigurationError, match="AZURE_AUTHORITY_HOST") as info:
        TokenClient(client_id="c", client_secret="s", tenant_id="t")
    assert info.value.setting == "AZURE_AUTHORITY_HOST"


def test_an_authority_host_argument_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "http://login.example")
    tc = TokenClient(
        client_id="c", client_secret="s", tenant_id="t", authority_host="login.microsoftonline.us"
    )
    assert tc.token_endpoint == "https://login.microsoftonline.us/t/oauth2/v2.0/token"


def test_a_secret_with_private_key_jwt_is_refused_by_the_constructor() -> None:
    with pytest.raises(ConfigurationError, match="private_key_jwt") as info:
        TokenClient(client_id="c", client_secret="s", tenant_id="t", auth_method="private_key_jwt")
    assert info.value.setting == "auth_method"


@pytest.mark.parametrize(
    "option", ["client_id", "client_secret", "tenant_id", "authority_host", "token_endpoint"]
)
def test_from_env_refuses_settings_it_reads_from_the_environment(option: str) -> None:
    # Was a TypeError ("got multiple values for keyword argument") or silently ignored.
    with pytest.raises(ConfigurationError, match="from the environment") as info:
        TokenClient.from_env(environ=ENV, **{option: "https://login.microsoftonline.us"})
    assert info.value.setting == option


def test_from_env_refuses_plain_http_endpoint() -> None:
    env = {**ENV, "CCFLOW_TOKEN_ENDPOINT": "http://idp.example/token"}
    with pytest.raises(ConfigurationError) as info:
        TokenClient.from_env(environ=env)
    assert info.value.setting == "CCFLOW_TOKEN_ENDPOINT"


def test_from_env_passes_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CCFLOW_TOKEN_ENDPOINT", raising=False)
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)
    posts: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posts.append(request)
        return httpx.Response(503)

    waits: list[float] = []
    tc = TokenClient.from_env(
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=waits.append,
    )
    with pytest.raises(TokenRequestError):
        tc.get_token("api://calc-api")
    assert len(posts) == 1  # no retry: the default of 3 would have made 4 POSTs
    assert waits == []


def test_constructor_does_no_network_io() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    with TokenClient(
        client_id="c",
        client_secret="s",
        tenant_id="t",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    ) as tc:
        assert tc.client_id == "c"


def test_one_info_line_per_fetch_and_none_per_hit(
    client: TokenClient, scope: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="ccflow"):
        client.get_token(scope)
        client.get_token(scope)
    records = [r for r in caplog.records if r.name == "ccflow"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert records[0].levelno == logging.INFO
    for part in (
        "host=login.ccflow.test",
        f"client_id={client.client_id}",
        scope,
        "expires_in=3599",
        "duration_ms=",
    ):
        assert part in message


SECRET = "ccflow~calc-client+local/test=secret"


def test_secret_is_never_shown(
    sync_client: ClientFactory,
    authority: Authority,
    clock: FakeClock,
    scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert authority.client("calc-client").secret == SECRET
    tc, _ = sync_client(max_retries=1)
    # client_secret="..." is the same as credential=ClientSecret("...") (docs/caller.md).
    held = ClientSecret(SECRET)
    texts = [repr(tc), str(tc), repr(held), str(held)]
    with caplog.at_level(logging.DEBUG):
        token = tc.get_token(scope)
        texts += [repr(token), str(token)]
        authority.set_fault("token", Fault(drop=True))
        clock.advance(4000)
        with pytest.raises(AuthorityUnreachableError) as unreachable:
            tc.get_token(scope)
        authority.clear_fault()
        bad, _ = sync_client(client_secret=SECRET + "x")
        with pytest.raises(TokenRequestError) as refused:
            bad.get_token(scope)
    for err in (unreachable.value, refused.value):
        texts += [str(err), repr(err), repr(err.__dict__), repr(err.__context__), repr(err.args)]
        texts.append(pickle.dumps(err).decode("latin-1"))
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(r.args) for r in caplog.records]
    assert caplog.records
    for text in texts:
        assert SECRET not in text
        assert "ccflow%7Ecalc-client" not in text


_CLIENT_REFUSAL = (
    "holds a credential and connections and cannot be pickled; create one per process "
    "(e.g. with from_env())"
)
_SECRET_REFUSAL = (
    "holds a secret and cannot be pickled; build it again from configuration in the other process"
)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (
            TokenClient(client_id="c", client_secret=SECRET, tenant_id="t"),
            f"TokenClient {_CLIENT_REFUSAL}",
        ),
        (
            AsyncTokenClient(client_id="c", client_secret=SECRET, tenant_id="t"),
            f"AsyncTokenClient {_CLIENT_REFUSAL}",
        ),
        (ClientSecret(SECRET), f"ClientSecret {_SECRET_REFUSAL}"),
        (ClientAssertion("a.b.c"), f"ClientAssertion {_SECRET_REFUSAL}"),
        (FederatedTokenFile("/token"), f"FederatedTokenFile {_SECRET_REFUSAL}"),
        (
            ManagedIdentity(environ={}),
            "ManagedIdentity may hold the host's IDENTITY_HEADER secret and cannot be pickled; "
            "create one in the other process",
        ),
    ],
)
def test_pickling_a_secret_holder_is_refused(obj: object, message: str) -> None:
    with pytest.raises(TypeError) as refused:
        pickle.dumps(obj)
    assert str(refused.value) == message


def test_owned_http_client_is_closed() -> None:
    # httpx refuses to send on a closed client; an open one would try to connect instead.
    with TokenClient(
        client_id="c",
        client_secret="s",
        token_endpoint="https://idp.invalid/token",
        max_retries=0,
        timeout=1.0,
    ) as tc:
        pass
    with pytest.raises(RuntimeError, match="client has been closed"):
        tc.get_token("s")


def test_given_http_client_is_left_open() -> None:
    http = httpx.Client()
    with TokenClient(client_id="c", client_secret="s", tenant_id="t", http_client=http):
        pass
    assert not http.is_closed
    http.close()


def test_async_http_client_is_refused_by_the_sync_face() -> None:
    with pytest.raises(ConfigurationError, match="AsyncTokenClient"):
        TokenClient(
            client_id="c", client_secret="s", tenant_id="t", http_client=httpx.AsyncClient()
        )  # type: ignore[arg-type]


@pytest.mark.parametrize("scopes", [["api://calc-api"], {"api://calc-api"}])
def test_a_list_of_scopes_as_one_argument_is_a_configuration_error(
    client: TokenClient, scopes: object
) -> None:
    # Was "TypeError: unhashable type: 'list'" from the cache lookup.
    with pytest.raises(ConfigurationError, match=r"get_token\(\*scopes\)"):
        client.get_token(scopes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "setting", "fragment"),
    [
        ({"client_id": 5}, "client_id", "must be a string"),
        ({"client_secret": b"s3cret"}, "client_secret", "must be a string"),
        ({"client_secret": 12345}, "client_secret", "must be a string"),
        ({"refresh_margin": float("nan")}, "refresh_margin", "refresh_margin"),
        ({"refresh_margin": float("inf")}, "refresh_margin", "refresh_margin"),
        ({"refresh_margin": True}, "refresh_margin", "refresh_margin"),
        ({"timeout": "10"}, "timeout", "timeout"),
        ({"timeout": -1}, "timeout", "timeout"),
        ({"timeout": 0}, "timeout", "timeout"),
        ({"timeout": float("nan")}, "timeout", "timeout"),
        ({"clock": 1000.0}, "clock", "clock"),
    ],
)
def test_wrong_types_and_values_are_named(
    kwargs: dict[str, object], setting: str, fragment: str
) -> None:
    # client_id=5 said "client_id is required", a bytes secret "client_secret is empty"; a NaN
    # margin made every get_token() a POST; a bad timeout or clock failed only on first use.
    base: dict[str, object] = {"client_id": "c", "client_secret": "s", "tenant_id": "t"}
    with pytest.raises(ConfigurationError, match=fragment) as info:
        TokenClient(**{**base, **kwargs})  # type: ignore[arg-type]
    assert info.value.setting == setting
    assert "s3cret" not in str(info.value)
    assert "12345" not in str(info.value)


@pytest.mark.parametrize("timeout", [5, 2.5, httpx.Timeout(3.0)])
def test_good_timeouts_are_accepted(timeout: float | httpx.Timeout) -> None:
    TokenClient(client_id="c", client_secret="s", tenant_id="t", timeout=timeout).close()


class FlakyCredential:
    """A user's own Credential: works once, then its source fails with a plain OSError."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.calls = 0

    def request_fields(
        self, *, client_id: str, token_endpoint: str, auth_method: str, now: float
    ) -> RequestFields:
        self.calls += 1
        if self.calls > 1:
            raise OSError(f"vault unreachable while reading {self.secret}")
        return RequestFields(form=(("client_id", client_id), ("client_secret", self.secret)))


def test_a_custom_credential_failing_during_a_proactive_refresh_serves_the_cached_token(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # Only CredentialError was caught: any other exception from a user's credential escaped
    # get_token() although a valid token was cached.
    secret = authority.client("calc-client").secret or ""
    credential = FlakyCredential(secret)
    tc, _ = sync_client(client_secret=None, credential=credential)
    first = tc.get_token(scope)
    clock.advance(3300)
    assert tc.get_token(scope) is first
    assert credential.calls == 2
    clock.now = first.expires_on
    with pytest.raises(CredentialError, match="FlakyCredential failed: OSError") as info:
        tc.get_token(scope)
    assert isinstance(info.value.__cause__, OSError)
    assert secret not in str(info.value)


class DropsDuringRefresh(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The authority, except that while a proactive refresh's POST is in flight the API answers
    401 for the cached token (``invalidate``, as BearerAuth does), and the refresh then fails."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self.on_refresh: Any = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.on_refresh is not None:
            self.on_refresh()
            return httpx.Response(503, json={"error": "temporarily_unavailable"})
        return self.authority.handle(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return self.handle_request(request)


def test_a_token_dropped_while_its_refresh_fails_is_not_put_back(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # The failed proactive refresh stored the cached token again, after a 401 had dropped it:
    # the next get_token() handed out the token the API had just refused.
    transport = DropsDuringRefresh(authority)
    tc, _ = sync_client(transport=transport, max_retries=0)
    first = tc.get_token(scope)
    clock.advance(3300)  # inside the refresh window: the next call refreshes proactively
    transport.on_refresh = lambda: tc.invalidate(first, scope)
    with pytest.raises(TokenRequestError):
        tc.get_token(scope)
    transport.on_refresh = None
    assert tc.get_token(scope) is not first


@pytest.mark.anyio
async def test_a_token_dropped_while_its_async_refresh_fails_is_not_put_back(
    async_client: AsyncClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    transport = DropsDuringRefresh(authority)
    tc, _ = async_client(transport=transport, max_retries=0)
    first = await tc.get_token(scope)
    clock.advance(3300)
    transport.on_refresh = lambda: tc.invalidate(first, scope)
    with pytest.raises(TokenRequestError):
        await tc.get_token(scope)
    transport.on_refresh = None
    assert (await tc.get_token(scope)) is not first


def test_a_failed_refresh_still_serves_a_token_nobody_dropped(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # The control: without the 401, the failed refresh serves the cached token, as documented.
    transport = DropsDuringRefresh(authority)
    tc, _ = sync_client(transport=transport, max_retries=0)
    first = tc.get_token(scope)
    clock.advance(3300)
    transport.on_refresh = lambda: None
    assert tc.get_token(scope) is first


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        ({"AZURE_TENANT_ID": "contoso/x"}, "AZURE_TENANT_ID"),
        ({"AZURE_TENANT_ID": "  "}, "AZURE_TENANT_ID"),
        ({"AZURE_CLIENT_ID": "  "}, "AZURE_CLIENT_ID"),
    ],
)
def test_from_env_names_the_variable_of_a_bad_value(extra: dict[str, str], setting: str) -> None:
    # configuration.md: "fails at startup with a ConfigurationError naming the variable"; these
    # named the constructor's tenant_id / client_id.
    with pytest.raises(ConfigurationError, match=setting) as info:
        TokenClient.from_env(environ={**ENV, **extra})
    assert info.value.setting == setting


@pytest.mark.parametrize(
    ("extra", "setting"),
    [
        ({"AZURE_TENANT_ID": "contoso/x"}, "AZURE_TENANT_ID"),
        ({"CCFLOW_TOKEN_ENDPOINT": "https://idp.example:99999/token"}, "CCFLOW_TOKEN_ENDPOINT"),
        # A tenant in the host: named the argument authority_host, which from_env() never took.
        ({"AZURE_AUTHORITY_HOST": "https://login.example.com/tid"}, "AZURE_AUTHORITY_HOST"),
    ],
)
def test_from_env_errors_start_with_the_variable(extra: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        TokenClient.from_env(environ={**ENV, **extra})
    assert str(info.value).startswith(f"{setting}")
    assert info.value.setting == setting


def test_the_constructor_and_from_env_share_one_config() -> None:
    def built(**options: Any) -> TokenClient:
        return TokenClient(
            client_id="cid", client_secret="sec", tenant_id="tid", authority_host=None, **options
        )

    def from_env(**options: Any) -> TokenClient:
        return TokenClient.from_env(environ=ENV, **options)

    tc = built()
    for attribute in ("client_id", "token_endpoint", "auth_method"):
        assert getattr(from_env(), attribute) == getattr(tc, attribute)
    assert _what_it_does(from_env) == _what_it_does(built)


def _what_it_does(make: Any) -> list[object]:
    """What a client sends, how often it retries and when it refreshes, seen from outside."""
    now = [START]
    posts: list[object] = []
    failing = [True]

    def handler(request: httpx.Request) -> httpx.Response:
        posts.append((request.method, str(request.url), request.content))
        if failing[0]:
            return httpx.Response(503)
        return httpx.Response(200, json={"access_token": f"t{len(posts)}", "expires_in": 3600})

    waits: list[float] = []
    tc = make(
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        clock=lambda: now[0],
        sleep=waits.append,
    )
    with pytest.raises(TokenRequestError):
        tc.get_token("api://calc-api")
    seen: list[object] = [len(posts), len(waits)]  # the retries
    failing[0] = False
    first = tc.get_token("api://calc-api")
    for seconds in (3600 - 301, 2):  # the refresh margin
        now[0] += seconds
        seen.append(tc.get_token("api://calc-api") is first)
    return [*seen, *posts]


@pytest.mark.parametrize("face", [TokenClient, AsyncTokenClient])
def test_sleep_must_be_callable(face: type[TokenClient] | type[AsyncTokenClient]) -> None:
    with pytest.raises(ConfigurationError, match="sleep must be a callable") as info:
        face(client_id="c", client_secret="s", tenant_id="t", sleep=2.0)  # type: ignore[arg-type]
    assert info.value.setting == "sleep"


def test_backoff_waits_go_through_sleep() -> None:
    answers = iter([httpx.Response(503), httpx.Response(200, json={"access_token": "t"})])
    waits: list[float] = []
    tc = TokenClient(
        client_id="c",
        client_secret="s",
        token_endpoint="https://idp.example/token",
        http_client=httpx.Client(transport=httpx.MockTransport(lambda request: next(answers))),
        sleep=waits.append,
    )
    assert tc.get_token("s").token == "t"
    assert len(waits) == 1
    assert 0.25 <= waits[0] <= 0.5


@pytest.mark.anyio
async def test_async_backoff_waits_are_awaited_through_sleep() -> None:
    answers = iter([httpx.Response(503), httpx.Response(200, json={"access_token": "t"})])
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    tc = AsyncTokenClient(
        client_id="c",
        client_secret="s",
        token_endpoint="https://idp.example/token",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(lambda request: next(answers))),
        sleep=sleep,
    )
    assert (await tc.get_token("s")).token == "t"
    assert len(waits) == 1


def test_one_cache_entry_per_normalised_scopes(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    tc, _ = sync_client()
    bare = scope.removesuffix("/.default")
    token = tc.get_token(bare)
    assert token is tc.get_token(scope) is tc.get_token(scope + "/")
    assert authority.hits["token"] == 1
    tc.invalidate(token, scope + "/")  # dropping it under one spelling drops it for all
    assert tc.get_token(bare) is not token
    assert tc.get_token(scope) is tc.get_token(bare)
    assert authority.hits["token"] == 2


def test_the_token_post_never_follows_a_redirect_even_if_the_http_client_does() -> None:
    # A 307/308 keeps the body: following it would send the secret wherever the Location
    # says, in clear if it is http://.
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"Location": "http://elsewhere.example/token"})

    tc = TokenClient(
        client_id="c",
        client_secret="s3cret",
        token_endpoint="https://idp.example/token",
        http_client=httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=True),
    )
    with pytest.raises(TokenRequestError) as info:
        tc.get_token("read")
    assert info.value.status_code == 307
    assert seen == ["https://idp.example/token"]


def test_the_token_post_ignores_the_http_clients_own_auth() -> None:
    # A shared httpx.Client whose auth is this client's BearerAuth sent the token POST through
    # BearerAuth, which asked for a token for the API scope from inside the token fetch:
    # recursion, and with the same scope a thread waiting for itself forever.
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "tok", "expires_in": 3600})
        return httpx.Response(200, json={"ok": True})

    http = httpx.Client(transport=httpx.MockTransport(handler))
    tc = TokenClient(
        client_id="c",
        client_secret="s3cret",
        token_endpoint="https://idp.example/token",
        http_client=http,
    )
    http.auth = tc.auth("read")
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(http.get("https://api.example/x")), daemon=True
    )
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert [r.url.path for r in seen] == ["/token", "/x"]
    assert "authorization" not in seen[0].headers
    assert seen[1].headers["authorization"] == "Bearer tok"


SHARED_DEFAULTS: dict[str, object] = {
    "headers": {"X-Api-Key": "downstream-key", "Authorization": "Bearer downstream-token"},
    "params": {"api-version": "2024-01-01"},
    "cookies": {"session": "downstream-session"},
    "base_url": "https://downstream.example",
}


def token_answer(seen: list[httpx.Request]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"access_token": "tok", "expires_in": 3600})

    return handler


def assert_only_the_flow(request: httpx.Request, timeout: float) -> None:
    assert str(request.url) == "https://idp.example/token"
    assert "x-api-key" not in request.headers
    assert "authorization" not in request.headers
    assert "cookie" not in request.headers
    assert request.headers["user-agent"] == f"ccflow/{ccflow.__version__}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.extensions["timeout"] == httpx.Timeout(timeout).as_dict()


def test_a_shared_clients_default_headers_params_and_cookies_stay_off_the_token_post() -> None:
    # A client shared for its proxy or TLS settings may carry another service's credentials
    # in its default headers; they went to the token endpoint with every POST.
    seen: list[httpx.Request] = []
    http = httpx.Client(transport=httpx.MockTransport(token_answer(seen)), **SHARED_DEFAULTS)
    tc = TokenClient(
        client_id="c",
        client_secret="s3cret",
        token_endpoint="https://idp.example/token",
        http_client=http,
        timeout=7,
    )
    assert tc.get_token("read").token == "tok"
    assert_only_the_flow(seen[0], 7)
    # The shared client keeps its defaults for its own requests.
    http.get("/x")
    assert seen[1].headers["x-api-key"] == "downstream-key"


@pytest.mark.anyio
async def test_a_shared_async_clients_defaults_stay_off_the_token_post() -> None:
    seen: list[httpx.Request] = []
    http = httpx.AsyncClient(transport=httpx.MockTransport(token_answer(seen)), **SHARED_DEFAULTS)
    tc = AsyncTokenClient(
        client_id="c",
        client_secret="s3cret",
        token_endpoint="https://idp.example/token",
        http_client=http,
        timeout=httpx.Timeout(4.0),
    )
    assert (await tc.get_token("read")).token == "tok"
    assert_only_the_flow(seen[0], 4.0)


def test_an_unreadable_answer_is_an_authority_error_without_the_request() -> None:
    # A body that fails to decode (bad gzip) raised httpx.DecodingError out of get_token(),
    # carrying the request whose content holds the secret.
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=b"not gzip")

    tc = TokenClient(
        client_id="c",
        client_secret="s3cret",
        token_endpoint="https://idp.example/token",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(AuthorityUnreachableError, match="could not be read") as info:
        tc.get_token("read")
    assert info.value.__context__ is None
    assert info.value.__cause__ is None


def test_a_credential_class_instead_of_an_instance_is_refused() -> None:
    # ClientSecret (the class) has a callable request_fields, so it was accepted and every
    # get_token() failed with a TypeError about a missing 'self'.
    with pytest.raises(ConfigurationError, match="an instance") as info:
        TokenClient(client_id="c", credential=ClientSecret, tenant_id="t")  # type: ignore[arg-type]
    assert info.value.setting == "credential"


def test_get_token_from_inside_its_own_token_request_fails_instead_of_waiting_forever(
    sync_client: ClientFactory, authority: Authority, clock: FakeClock, scope: str
) -> None:
    # A credential (or anything the fetch calls) asking the same client for the same scopes
    # joined the flight it was part of and waited for itself forever.
    class Reentrant:
        client: TokenClient

        def request_fields(self, **_: object) -> RequestFields:
            self.client.get_token(scope)
            raise AssertionError("unreachable")

    credential = Reentrant()
    tc, _ = sync_client(client_secret=None, credential=credential)
    credential.client = tc
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            tc.get_token(scope)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert "inside its own token request" in str(outcome[0])


def test_an_msal_style_authority_as_authority_host_is_refused() -> None:
    # msal's authority is host + tenant; as our authority_host it would build a 404 URL.
    with pytest.raises(ConfigurationError, match="pass the tenant as tenant_id") as info:
        TokenClient(
            client_id="c",
            client_secret="s",
            tenant_id="contoso.onmicrosoft.com",
            authority_host="https://login.microsoftonline.com/contoso.onmicrosoft.com",
        )
    assert info.value.setting == "authority_host"


@pytest.mark.parametrize(
    ("exc", "match"),
    [
        (httpx.ConnectError("refused"), "could not connect"),
        (httpx.ReadError("connection reset by peer"), "dropped the connection"),
        (httpx.RemoteProtocolError("illegal status line"), "did not answer in HTTP"),
        (httpx.ReadTimeout("read"), "timed out"),
    ],
)
def test_a_network_failure_is_described_as_what_happened(exc: Exception, match: str) -> None:
    # A reset after connecting is not "could not connect": that would send the user to check
    # DNS and firewalls for a server that answered the handshake.
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    tc = TokenClient(
        client_id="c",
        client_secret="s",
        token_endpoint="https://login.example/token",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )
    with pytest.raises(AuthorityUnreachableError, match=match):
        tc.get_token("api://x/.default")


def test_an_interrupt_just_after_the_flight_is_registered_does_not_strand_it(
    sync_client: ClientFactory, scope: str
) -> None:
    # Ctrl-C between registering the flight and the fetch (here: while the cache is asked)
    # left the flight behind: this thread's next get_token() said it was called from inside
    # its own token request, and any other thread would have waited for ever.
    class InterruptOnce(MemoryTokenCache):
        armed = True

        def refill(self, key: TokenKey, now: float, fetch: Callable[[], CacheEntry]) -> CacheEntry:
            if self.armed:
                self.armed = False
                raise KeyboardInterrupt
            return fetch()

    tc, _ = sync_client(cache=InterruptOnce())
    with pytest.raises(KeyboardInterrupt):
        tc.get_token(scope)
    other: list[AccessToken] = []
    thread = threading.Thread(target=lambda: other.append(tc.get_token(scope)), daemon=True)
    thread.start()
    thread.join(10.0)
    assert not thread.is_alive()  # it did not wait for the interrupted flight
    assert other[0].token
    assert tc.get_token(scope) is other[0]
