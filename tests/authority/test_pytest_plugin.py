"""The pytest11 plugin: its fixtures, exercised in a fresh pytest run with pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def run(pytester: pytest.Pytester, source: str, passed: int) -> None:
    pytester.makepyfile(source)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-W", "error"
    )
    result.assert_outcomes(passed=passed)


def test_in_process_authority_and_tokens(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import httpx, jwt

        def test_token_endpoint(ccflow_authority):
            http = httpx.Client(transport=ccflow_authority.transport())
            client = ccflow_authority.client("calc-client")
            r = http.post(ccflow_authority.token_endpoint, data={
                "grant_type": "client_credentials", "client_id": client.client_id,
                "client_secret": client.secret,
                "scope": ccflow_authority.api("calc-api").default_scope})
            assert r.status_code == 200

        def test_tokens_come_from_the_same_authority(ccflow_authority, ccflow_tokens):
            assert ccflow_tokens.authority is ccflow_authority
            claims = jwt.decode(ccflow_tokens.expired(), options={"verify_signature": False})
            assert claims["iss"] == ccflow_authority.issuer
    """,
        passed=2,
    )


def test_respx_mock_routes_only_the_authority_host(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import httpx

        def test_mocked(ccflow_authority_mock):
            r = httpx.get(ccflow_authority_mock.discovery_url)
            assert r.json()["issuer"] == ccflow_authority_mock.issuer
            assert ccflow_authority_mock.hits["discovery"] == 1
    """,
        passed=1,
    )


def test_marker_configures_the_authority(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import pytest

        @pytest.mark.ccflow_authority(token_lifetime=60, clock=lambda: 1000.0)
        def test_short(ccflow_authority, ccflow_tokens):
            assert ccflow_authority.token_lifetime == 60
            import jwt
            claims = jwt.decode(ccflow_tokens.valid(), options={"verify_signature": False})
            assert claims["exp"] == 1060
    """,
        passed=1,
    )


def test_real_tls_server(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import ssl, httpx

        def test_server(ccflow_authority_server):
            ctx = ssl.create_default_context(cafile=str(ccflow_authority_server.ca_file))
            with httpx.Client(verify=ctx) as http:
                r = http.get(ccflow_authority_server.authority.jwks_uri)
            assert r.status_code == 200
            assert ccflow_authority_server.url.startswith("https://127.0.0.1:")
    """,
        passed=1,
    )


def test_fixtures_are_isolated_per_test(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        from ccflow.authority import Fault

        def test_first(ccflow_authority):
            ccflow_authority.set_fault("token", Fault(status=503))
            ccflow_authority.hits["token"] += 1

        def test_second(ccflow_authority):
            assert ccflow_authority.hits == {}
    """,
        passed=2,
    )


def test_the_docs_example_runs(pytester: pytest.Pytester) -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(
        myservice="""
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route
        from ccflow import RequireRole

        async def add(request):
            return JSONResponse({"result": 3})

        def create_app(validator):
            app = Starlette(routes=[Route("/calc/v1/add/{a}/{b}", add)])
            app.add_middleware(RequireRole("invokeRole", validator=validator))
            return app
    """
    )
    pytester.syspathinsert()
    run(pytester, example, passed=1)


def test_tokens_follow_the_server_when_the_test_uses_it(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import asyncio, ssl, httpx
        from ccflow import TokenValidator

        def test_server_tokens_validate(ccflow_authority_server, ccflow_tokens):
            authority = ccflow_authority_server.authority
            assert ccflow_tokens.authority is authority
            ctx = ssl.create_default_context(cafile=str(ccflow_authority_server.ca_file))

            async def validate():
                async with httpx.AsyncClient(verify=ctx) as http:
                    validator = TokenValidator(
                        tenant_id=authority.tenant_id, authority_host=authority.host,
                        audience=authority.api("calc-api").client_id, http_client=http)
                    try:
                        return await validator.validate(ccflow_tokens.valid())
                    finally:
                        await validator.aclose()

            assert asyncio.run(validate()).client_id == authority.client("calc-client").client_id
    """,
        passed=1,
    )


def test_marker_with_an_unknown_keyword_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.ccflow_authority(token_lifetim=60)
        def test_typo(ccflow_authority):
            pass
    """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown keyword(s) token_lifetim; it takes registrations*"])
    result.stdout.no_fnmatch_line("*TypeError*")


def test_mock_defers_other_hosts_to_the_tests_own_respx_router(pytester: pytest.Pytester) -> None:
    # Its catch-all pass-through route answered first, so a respx router the test opened
    # itself never saw a request: the mocked service was called for real.
    run(
        pytester,
        """
        import httpx, respx

        def test_own_router_inside(ccflow_authority_mock):
            with respx.mock() as own:
                own.get("http://127.0.0.1:9/status").respond(200, json={"up": True})
                assert httpx.get("http://127.0.0.1:9/status").json() == {"up": True}
                r = httpx.get(ccflow_authority_mock.discovery_url)
                assert r.json()["issuer"] == ccflow_authority_mock.issuer

        def test_respx_mock_fixture_after(ccflow_authority_mock, respx_mock):
            respx_mock.get("http://127.0.0.1:9/status").respond(204)
            assert httpx.get("http://127.0.0.1:9/status").status_code == 204
            assert httpx.get(ccflow_authority_mock.jwks_uri).status_code == 200
    """,
        passed=2,
    )


def test_mock_passes_other_hosts_through(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import ssl, httpx

        def test_real_server_reached(ccflow_authority_mock, ccflow_authority_server):
            server = ccflow_authority_server
            trust = ssl.create_default_context(cafile=str(server.ca_file))
            with httpx.Client(verify=trust) as http:
                r = http.get(server.authority.discovery_url)
            assert r.json()["issuer"] == server.authority.issuer
            assert server.authority.hits["discovery"] == 1
            assert ccflow_authority_mock.hits["discovery"] == 0
    """,
        passed=1,
    )


def test_mock_without_respx_says_which_extra_to_install(pytester: pytest.Pytester) -> None:
    # respx comes with the `testing` extra only: a plain `pip install ccflow-oauth` has the plugin
    # but not respx, and the fixture failed with a bare ModuleNotFoundError.
    pytester.makepyfile(
        """
        import sys, pytest

        @pytest.fixture
        def no_respx(monkeypatch):
            monkeypatch.setitem(sys.modules, "respx", None)

        def test_mock(no_respx, ccflow_authority_mock):
            pass
    """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*ccflow_authority_mock fixture needs respx*ccflow-oauth[[]testing[]]*"]
    )


def test_validator_accepts_the_factorys_tokens_and_refuses_bad_ones(
    pytester: pytest.Pytester,
) -> None:
    run(
        pytester,
        """
        import asyncio, pytest
        from ccflow.errors import InvalidTokenError

        def test_validator(ccflow_authority, ccflow_validator, ccflow_tokens):
            verdict = asyncio.run(ccflow_validator.validate(ccflow_tokens.valid()))
            assert verdict.client_id == ccflow_authority.client("calc-client").client_id
            assert verdict.roles == ("invokeRole",)
            for bad in (ccflow_tokens.expired(), ccflow_tokens.wrong_audience(),
                        ccflow_tokens.v1(), ccflow_tokens.other_key()):
                with pytest.raises(InvalidTokenError):
                    asyncio.run(ccflow_validator.validate(bad))
            assert ccflow_authority.hits["jwks"] >= 1   # keys fetched from this authority
    """,
        passed=1,
    )


def test_validator_follows_the_markers_registrations_and_clock(
    pytester: pytest.Pytester,
) -> None:
    run(
        pytester,
        """
        import asyncio, pytest
        from ccflow.authority import Registrations
        from ccflow.errors import InvalidTokenError

        SHOP = Registrations.from_mapping({
            "apis": {"orders-api": {"client_id": "0000000a-0000-4000-8000-00000000000a",
                                    "identifier_uri": "api://orders", "roles": ["Orders.Read"],
                                    "access_token_version": 1}},
            "clients": {"shop": {"client_id": "0000000d-0000-4000-8000-00000000000d",
                                 "secret": "s", "roles": {"orders-api": ["Orders.Read"]}}},
        })
        CLOCK = [1_000_000.0]

        @pytest.mark.ccflow_authority(registrations=SHOP, clock=lambda: CLOCK[0])
        def test_shop(ccflow_validator, ccflow_tokens):
            token = ccflow_tokens.valid()               # shop calling orders-api, v1
            verdict = asyncio.run(ccflow_validator.validate(token))
            assert verdict.roles == ("Orders.Read",)
            assert verdict.version == "1.0"
            CLOCK[0] += 2 * 3600                        # the authority's clock is the validator's
            with pytest.raises(InvalidTokenError):
                asyncio.run(ccflow_validator.validate(ccflow_tokens.valid(now=1_000_000.0)))
    """,
        passed=1,
    )


def test_validator_allows_every_tenant_served_for_a_multi_tenant_api(
    pytester: pytest.Pytester,
) -> None:
    run(
        pytester,
        """
        import asyncio, pytest
        from ccflow.authority import PARTNER_TENANT_ID, Registrations

        @pytest.mark.ccflow_authority(registrations=Registrations.multi_tenant())
        def test_partner(ccflow_validator, ccflow_tokens):
            verdict = asyncio.run(ccflow_validator.validate(ccflow_tokens.valid("partner-client")))
            assert verdict.tenant_id == PARTNER_TENANT_ID
    """,
        passed=1,
    )


def test_validator_follows_the_server_when_the_test_uses_it(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import asyncio

        def test_server(ccflow_authority_server, ccflow_validator, ccflow_tokens):
            authority = ccflow_authority_server.authority
            assert ccflow_tokens.authority is authority
            verdict = asyncio.run(ccflow_validator.validate(ccflow_tokens.valid()))
            assert verdict.claims["iss"] == authority.issuer
            assert authority.hits["jwks"] >= 1
    """,
        passed=1,
    )


def test_session_fixtures_are_built_once_and_shared(pytester: pytest.Pytester) -> None:
    run(
        pytester,
        """
        import asyncio, ssl, httpx

        SEEN = []

        def test_first(ccflow_authority_session, ccflow_authority_server_session):
            SEEN.append((ccflow_authority_session, ccflow_authority_server_session))

        def test_second(ccflow_authority_session, ccflow_authority_server_session):
            assert SEEN == [(ccflow_authority_session, ccflow_authority_server_session)]
            server = ccflow_authority_server_session
            assert server.url.startswith("https://127.0.0.1:")
            trust = ssl.create_default_context(cafile=str(server.ca_file))
            with httpx.Client(verify=trust) as http:
                assert http.get(server.authority.jwks_uri).status_code == 200

        def test_tokens_and_validator_follow_the_session_authority(
            ccflow_authority_session, ccflow_tokens, ccflow_validator, ccflow_authority
        ):
            assert ccflow_tokens.authority is ccflow_authority_session
            assert ccflow_authority_session is not ccflow_authority
            asyncio.run(ccflow_validator.validate(ccflow_tokens.valid()))
    """,
        passed=3,
    )
