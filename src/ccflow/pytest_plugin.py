"""The ccflow pytest plugin (entry point ``pytest11``): fixtures on the local authority.

Fixtures (function-scoped, each test gets a fresh authority with no faults):

- ``ccflow_authority``: an in-process :class:`~ccflow.authority.Authority`; talk to it with
  ``httpx.Client(transport=ccflow_authority.transport())``.
- ``ccflow_authority_mock``: the same authority with respx routing its host
  (``https://login.ccflow.test``) to it for the test; other hosts pass through untouched, or
  go to the test's own respx router when it has one.
- ``ccflow_authority_server``: the authority as a real HTTPS server on 127.0.0.1 (a free
  port), an :class:`~ccflow.authority.AuthorityServer` (``.authority``, ``.url``,
  ``.ca_file``), stopped after the test.
- ``ccflow_tokens``: a :class:`~ccflow.testing.TokenFactory` on the test's authority: the
  server's when the test uses a server fixture (so that its tokens carry the server's issuer
  and pass validators pointed at it), else the session's when it uses
  ``ccflow_authority_session``, else ``ccflow_authority``.
- ``ccflow_validator``: a :class:`~ccflow.TokenValidator` for the factory's API on that same
  authority (audience its client id and App ID URI, v1 tokens accepted when the API issues
  them, every tenant served allowed when it is multi-tenant), on the authority's clock, with
  keys fetched in-process (no sockets, no respx needed).

Session-scoped variants, shared by every test of the session (state included: faults, hits,
rotated keys) and built once, with the default configuration (markers do not reach them):

- ``ccflow_authority_session``: an in-process authority;
- ``ccflow_authority_server_session``: the authority as an HTTPS server on 127.0.0.1.

Configure the function-scoped authority with the ``ccflow_authority`` marker, whose keyword
arguments go to ``Authority(...)`` (``registrations``, ``token_lifetime``, ``clock``,
``host``, ``one_time_assertions``; others are a usage error)::

    @pytest.mark.ccflow_authority(token_lifetime=60)
    def test_short_tokens(ccflow_tokens): ...

Imports of ccflow's modules happen inside the fixtures, so loading the plugin costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ccflow import TokenValidator
    from ccflow.authority import Authority, AuthorityServer
    from ccflow.testing import TokenFactory

__all__ = [
    "ccflow_authority",
    "ccflow_authority_mock",
    "ccflow_authority_server",
    "ccflow_authority_server_session",
    "ccflow_authority_session",
    "ccflow_tokens",
    "ccflow_validator",
    "pytest_configure",
]

_MARKER = "ccflow_authority"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``ccflow_authority`` marker."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(**kwargs): keyword arguments for the local Authority of the ccflow "
        "fixtures (registrations=, token_lifetime=, clock=, host=, one_time_assertions=)",
    )


_KEYWORDS = ("registrations", "host", "token_lifetime", "clock", "one_time_assertions")


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The keyword arguments of the test's ``ccflow`` marker."""
    marker = request.node.get_closest_marker(_MARKER)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{_MARKER} takes keyword arguments only")
    unknown = sorted(set(marker.kwargs) - set(_KEYWORDS))
    if unknown:
        raise pytest.UsageError(
            f"@pytest.mark.{_MARKER}: unknown keyword(s) {', '.join(unknown)}; "
            f"it takes {', '.join(_KEYWORDS)}"
        )
    return dict(marker.kwargs)


@pytest.fixture
def ccflow_authority(request: pytest.FixtureRequest) -> Authority:
    """An in-process local authority (no sockets); see the module docstring."""
    from ccflow.authority import Authority

    return Authority(**_options(request))


@pytest.fixture
def ccflow_authority_mock(ccflow_authority: Authority) -> Iterator[Authority]:
    """``ccflow_authority`` with respx routing its host to it during the test."""
    import httpx

    try:
        import respx
    except ImportError:  # respx comes with the `testing` extra, not with ccflow itself
        raise ImportError(
            "the ccflow_authority_mock fixture needs respx: pip install 'ccflow-oauth[testing]'"
        ) from None

    with respx.mock(assert_all_called=False) as router:
        ccflow_authority.mock(router)

        def other_hosts(request: httpx.Request) -> httpx.Request | None:
            # While the test has a respx router of its own, leave other hosts to it (respx
            # asks its routers in turn); otherwise let them through to the network.
            mocker = router.Mocker
            others = [r for r in mocker.routers if r is not router] if mocker else []
            return None if others else request

        router.route().mock(side_effect=other_hosts)
        yield ccflow_authority


def _server(options: dict[str, Any]) -> AuthorityServer:
    """An HTTPS local authority server on a free 127.0.0.1 port (not yet started)."""
    from ccflow.authority import Authority, AuthorityServer

    options.pop("host", None)

    def make(url: str) -> Authority:
        return Authority(host=url, **options)

    return AuthorityServer(tls=True, authority_factory=make)


@pytest.fixture
def ccflow_authority_server(request: pytest.FixtureRequest) -> Iterator[AuthorityServer]:
    """The local authority as an HTTPS server on 127.0.0.1 (free port), for the test."""
    with _server(_options(request)) as server:
        yield server


@pytest.fixture(scope="session")
def ccflow_authority_session() -> Authority:
    """An in-process local authority shared by every test of the session."""
    from ccflow.authority import Authority

    return Authority()


@pytest.fixture(scope="session")
def ccflow_authority_server_session() -> Iterator[AuthorityServer]:
    """The local authority as an HTTPS server on 127.0.0.1, shared by the whole session."""
    with _server({}) as server:
        yield server


# Which authority the test's tokens and validator belong to, first match wins: a server's
# tokens carry its issuer, so they follow the server whenever the test uses one.
_SOURCES = (
    "ccflow_authority_server",
    "ccflow_authority_server_session",
    "ccflow_authority_session",
)


def _test_authority(request: pytest.FixtureRequest) -> Authority:
    """The authority the test uses (see ``_SOURCES``), else ``ccflow_authority``."""
    from ccflow.authority import Authority

    for name in _SOURCES:
        if name in request.fixturenames:
            source: Authority | AuthorityServer = request.getfixturevalue(name)
            return source if isinstance(source, Authority) else source.authority
    authority: Authority = request.getfixturevalue("ccflow_authority")
    return authority


@pytest.fixture
def ccflow_tokens(request: pytest.FixtureRequest) -> TokenFactory:
    """A :class:`~ccflow.testing.TokenFactory` on the test's authority (see the module
    docstring: the server's when the test uses one)."""
    from ccflow.testing import TokenFactory

    return TokenFactory(_test_authority(request))


@pytest.fixture
def ccflow_validator(request: pytest.FixtureRequest) -> TokenValidator:
    """A :class:`~ccflow.TokenValidator` for the default API of the test's authority, with
    keys fetched in-process and the authority's clock."""
    import httpx

    from ccflow import TokenValidator
    from ccflow.testing import TokenFactory

    authority = _test_authority(request)
    name = TokenFactory(authority).api
    if name is None:
        raise pytest.UsageError("ccflow_validator needs an API app in the registrations")
    api = authority.api(name)
    tenant: dict[str, Any] = {"tenant_id": authority.tenant_id}
    if api.multi_tenant:
        tenant = {"tenant_id": "organizations", "allowed_tenants": authority.tenant_ids}
    return TokenValidator(
        **tenant,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        accept_v1=api.access_token_version == 1,
        http_client=httpx.AsyncClient(transport=authority.transport()),
        clock=authority.clock,
    )
