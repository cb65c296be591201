"""The sample calc API and its client, end to end on the local authority (no sockets)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from examples.calc_api import client as calc_client
from examples.calc_api.app import create_app
from starlette.testclient import TestClient
from tests.support import token_client, validator_settings

from ccflow import ConfigurationError, TokenValidator
from ccflow.authority import Authority


@pytest.fixture
def api(ccflow_authority: Authority) -> Iterator[TestClient]:
    validator = TokenValidator(**validator_settings(ccflow_authority))
    with TestClient(create_app(validator)) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_add_answers_result_and_caller(ccflow_authority: Authority, api: TestClient) -> None:
    response = api.get("/calc/v1/add/2/3", headers=bearer(ccflow_authority.mint()))
    assert response.json() == {
        "result": 5,
        "caller": ccflow_authority.client("calc-client").client_id,
    }


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [("-2", "3", 1), ("1.5", "2", 3.5), ("10", "-10", 0), ("+1e3", ".5", 1000.5), ("5.", "0", 5)],
)
def test_add_takes_signed_and_decimal_numbers(
    ccflow_authority: Authority, api: TestClient, a: str, b: str, result: float
) -> None:
    response = api.get(f"/calc/v1/add/{a}/{b}", headers=bearer(ccflow_authority.mint()))
    assert response.json()["result"] == result


@pytest.mark.parametrize(
    "a", ["x", "nan", "inf", "1e999", "٣", "1_000", "%201", "1%20", "1%0A", "0x10", "1e", "1.2.3"]
)
def test_add_refuses_what_is_not_a_finite_number(
    ccflow_authority: Authority, api: TestClient, a: str
) -> None:
    response = api.get(f"/calc/v1/add/{a}/1", headers=bearer(ccflow_authority.mint()))
    assert response.status_code == 400


@pytest.mark.parametrize(("a", "b"), [("1e308", "1e308"), ("-1.7e308", "-1.7e308")])
def test_add_refuses_a_sum_too_large_to_be_a_finite_number(
    ccflow_authority: Authority, api: TestClient, a: str, b: str
) -> None:
    response = api.get(f"/calc/v1/add/{a}/{b}", headers=bearer(ccflow_authority.mint()))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_number"


def test_healthz_needs_no_token(api: TestClient) -> None:
    assert (api.get("/healthz").status_code, api.get("/healthz").text) == (200, "ok")


def test_add_without_token_is_401(api: TestClient) -> None:
    assert api.get("/calc/v1/add/2/3").status_code == 401


def test_client_gets_a_token_and_calls_the_api(
    ccflow_authority: Authority, api: TestClient
) -> None:
    caller = ccflow_authority.client("calc-client")
    with token_client(ccflow_authority, name=caller.name) as tokens:
        answer = calc_client.add(
            "2", "3", tokens=tokens, scope=ccflow_authority.api("calc-api").default_scope, api=api
        )
    assert answer == {"result": 5, "caller": caller.client_id}


@pytest.mark.parametrize(
    ("name", "a", "reported"),
    [
        pytest.param("reader-client", "2", "403", id="a-refusal-with-the-challenge"),
        pytest.param(
            "calc-client", "x", "400 a and b must be finite numbers", id="an-error-body-without"
        ),
    ],
)
def test_client_reports_what_the_api_refused(
    ccflow_authority: Authority, api: TestClient, name: str, a: str, reported: str
) -> None:
    caller = ccflow_authority.client(name)
    with (
        token_client(ccflow_authority, name=caller.name) as tokens,
        pytest.raises(httpx.HTTPStatusError, match=reported),
    ):
        calc_client.add(
            a, "3", tokens=tokens, scope=ccflow_authority.api("calc-api").default_scope, api=api
        )


def test_client_reports_an_answer_that_is_not_json(ccflow_authority: Authority) -> None:
    # CALC_API_URL pointing at something else (a proxy's HTML page, another service).
    caller = ccflow_authority.client("calc-client")
    page = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hello</html>"))
    with (
        token_client(ccflow_authority, name=caller.name) as tokens,
        httpx.Client(transport=page, base_url="http://127.0.0.1:8000") as api,
        pytest.raises(httpx.HTTPError, match=r"200 .*not JSON"),
    ):
        calc_client.add(
            "2", "3", tokens=tokens, scope=ccflow_authority.api("calc-api").default_scope, api=api
        )


# --- configured from the environment, as `uvicorn examples.calc_api.app:app` runs it --------


def env_for(ccflow_authority: Authority) -> dict[str, str]:
    registration = ccflow_authority.api("calc-api")
    return {
        "CCFLOW_TENANT_ID": ccflow_authority.tenant_id,
        "AZURE_AUTHORITY_HOST": ccflow_authority.host,
        "CCFLOW_AUDIENCE": f"{registration.client_id},{registration.identifier_uri}",
        "CCFLOW_ALLOWED_CLIENTS": ccflow_authority.client("calc-client").client_id,
    }


def fresh_module() -> ModuleType:
    # A fresh module, so that its app builds its middleware stack (and reads the environment)
    # anew rather than reuse an earlier test's.
    return importlib.reload(importlib.import_module("examples.calc_api.app"))


def test_app_from_the_environment_serves_good_tokens(
    ccflow_authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env_for(ccflow_authority).items():
        monkeypatch.setenv(name, value)
    with ccflow_authority.mock():
        app: Any = fresh_module().app
        with TestClient(app) as client:
            response = client.get("/calc/v1/add/2/3", headers=bearer(ccflow_authority.mint()))
    assert response.status_code == 200


def test_app_module_imports_without_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    # RequireRole reads the environment when the app starts, not when the module is imported.
    for name in ("CCFLOW_AUDIENCE", "CCFLOW_TENANT_ID", "AZURE_TENANT_ID", "CCFLOW_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    assert fresh_module().app is not None


@pytest.mark.parametrize("missing", ["CCFLOW_AUDIENCE", "CCFLOW_TENANT_ID"])
def test_app_without_configuration_fails_at_startup_naming_the_variable(
    ccflow_authority: Authority, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    for name, value in env_for(ccflow_authority).items():
        monkeypatch.setenv(name, value)
    for name in (missing, "AZURE_TENANT_ID", "CCFLOW_ISSUER"):
        monkeypatch.delenv(name, raising=False)
    app = fresh_module().app
    with pytest.raises(ConfigurationError, match=missing), TestClient(app):
        pass  # pragma: no cover - the start-up itself fails


def test_client_main_names_a_calc_api_url_httpx_cannot_parse(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # httpx.InvalidURL is no httpx.HTTPError: main() ended in a traceback.
    monkeypatch.setenv("CALC_API_SCOPE", "api://calc/.default")
    monkeypatch.setenv("CALC_API_URL", "http://[::1")
    assert calc_client.main(["2", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: CALC_API_URL is not a valid URL")
    assert "Traceback" not in err


@pytest.mark.parametrize("a", ["1#", "1?b=2", "1/2", "\x01"])
def test_client_sends_each_number_as_one_path_segment(ccflow_authority: Authority, a: str) -> None:
    # "1#" cut the URL to /calc/v1/add/1 (a 404), "1?b=2" made a query string, and a control
    # character raised httpx.InvalidURL, a traceback: each now reaches the API as given.
    caller = ccflow_authority.client("calc-client")
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"result": 0, "caller": caller.client_id})

    with (
        token_client(ccflow_authority, name=caller.name) as tokens,
        httpx.Client(transport=httpx.MockTransport(answer), base_url="http://calc") as api,
    ):
        calc_client.add(
            a, "3", tokens=tokens, scope=ccflow_authority.api("calc-api").default_scope, api=api
        )
    (request,) = seen
    assert request.url.query == b""
    assert request.url.raw_path.count(b"/") == 5  # /calc/v1/add/<a>/<b>
    assert request.url.path == f"/calc/v1/add/{a}/3"


def client_env(ccflow_authority: Authority, monkeypatch: pytest.MonkeyPatch) -> None:
    caller = ccflow_authority.client("calc-client")
    for name, value in {
        "AZURE_TENANT_ID": ccflow_authority.tenant_id,
        "AZURE_CLIENT_ID": caller.client_id,
        "AZURE_CLIENT_SECRET": caller.secret or "",
        "AZURE_AUTHORITY_HOST": ccflow_authority.host,
        "CALC_API_SCOPE": ccflow_authority.api("calc-api").default_scope,
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "localhost:8000", "ftp://calc", "http://"])
def test_client_main_names_a_calc_api_url_that_is_not_http(
    ccflow_authority: Authority,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    url: str,
) -> None:
    # "127.0.0.1:8000" (no scheme) got a token, then said only "Request URL is missing an
    # 'http://' or 'https://' protocol."; "localhost:8000" that 'localhost://' is unsupported.
    client_env(ccflow_authority, monkeypatch)
    monkeypatch.setenv("CALC_API_URL", url)
    with ccflow_authority.mock():
        assert calc_client.main(["2", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: CALC_API_URL must be an http:// or https:// URL, got {url!r}")
    assert ccflow_authority.hits.get("token", 0) == 0


def test_client_main_takes_an_empty_calc_api_url_as_unset(
    ccflow_authority: Authority, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `export CALC_API_URL=` made the client call the URL "" instead of the default.
    client_env(ccflow_authority, monkeypatch)
    monkeypatch.setenv("CALC_API_URL", "")
    caller = ccflow_authority.client("calc-client").client_id
    with ccflow_authority.mock() as router:
        router.get("http://127.0.0.1:8000/calc/v1/add/2/3").respond(
            200, json={"result": 5, "caller": caller}
        )
        assert calc_client.main(["2", "3"]) == 0
    assert capsys.readouterr().out == f'{{"result": 5, "caller": "{caller}"}}\n'


def test_client_main_says_which_calc_api_it_could_not_reach(
    ccflow_authority: Authority, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An API that was not running printed only "error: [Errno 111] Connection refused".
    client_env(ccflow_authority, monkeypatch)
    monkeypatch.setenv("CALC_API_URL", "http://127.0.0.1:8000")
    with ccflow_authority.mock() as router:
        router.get("http://127.0.0.1:8000/calc/v1/add/2/3").mock(
            side_effect=httpx.ConnectError("[Errno 111] Connection refused")
        )
        assert calc_client.main(["2", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: calling the calc API at http://127.0.0.1:8000 failed")
    assert "ConnectError: [Errno 111] Connection refused" in err
    assert "CALC_API_URL" in err


def test_client_main_without_a_scope_shows_one_that_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # It suggested "api://<app id uri>/.default": an App ID URI already starts with api://.
    monkeypatch.delenv("CALC_API_SCOPE", raising=False)
    assert calc_client.main(["2", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: CALC_API_SCOPE is not set")
    assert "api://<calc-api client id>/.default" in err
    assert "api://<app id uri>" not in err
