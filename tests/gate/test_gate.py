"""The gate in-process: rules by path and method, where the original request comes from,
path normalisation, identity headers, and the refusals."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import FACE_CASES, NOW, face_challenge_ok, face_token

from ccflow._gate_rules import normalized_path
from ccflow.authority import Authority
from ccflow.errors import ConfigurationError, InvalidRequestError
from ccflow.gate import Gate, Rules, parse_upstream_headers
from ccflow.gate import gate_rules as build_rules
from ccflow.starlette import Refusal
from ccflow.testing import TokenFactory

RULES = {
    "default": {"roles": ["invokeRole"]},
    "route": [
        {"path": "/admin", "roles": ["adminRole"]},
        {"path": "/reports", "methods": ["GET"], "scopes": ["Reports.Read"]},
        {"path": "/calc", "roles": ["invokeRole"], "scopes": ["Calc.Read"]},
        {"path": "/healthz", "public": True},
    ],
}


async def ask(
    gate: Gate, path: str = "/", token: str | None = None, **headers: str
) -> httpx.Response:
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    transport = httpx.ASGITransport(app=gate)
    async with httpx.AsyncClient(transport=transport, base_url="http://gate") as client:
        return await client.get(path, headers=sent)


def mint(authority: Authority, **options: Any) -> str:
    return authority.mint(now=NOW, **options)


@pytest.mark.anyio
async def test_allowed_request_gets_the_identity_headers(
    authority: Authority, make_gate: Any
) -> None:
    response = await ask(make_gate(), "/anything", mint(authority))
    assert response.status_code == 200
    assert response.headers["x-ccflow-client-id"] == authority.client("calc-client").client_id
    assert response.headers["x-ccflow-tenant-id"] == authority.tenant_id
    assert response.headers["x-ccflow-roles"] == "invokeRole"
    assert "x-ccflow-scopes" not in response.headers


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ({}, 401, None),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, None),
        ({"Authorization": "Bearer a b"}, 400, "invalid_request"),
        ({"Authorization": "Bearer abc.def.ghi"}, 401, "invalid_token"),
    ],
)
async def test_refusals_carry_the_rfc6750_challenge(
    make_gate: Any, headers: dict[str, str], status: int, error: str | None
) -> None:
    response = await ask(make_gate(), "/x", **headers)
    assert response.status_code == status
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="')
    assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge)
    assert response.headers["x-ccflow-error"] == (error or "unauthorized")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "method", "options", "status"),
    [
        ("/calc/add", "GET", {}, 200),  # role
        ("/calc/add", "GET", {"roles": (), "claims": {"scp": "Calc.Read"}}, 200),  # scope
        ("/calc/add", "GET", {"roles": (), "claims": {"scp": "Other"}}, 403),
        ("/calculator", "GET", {}, 200),  # not under /calc: the default rule
        ("/admin", "GET", {}, 403),
        ("/admin/users", "DELETE", {}, 403),
        ("/reports/q1", "GET", {"claims": {"scp": "Reports.Read"}}, 200),
        ("/reports/q1", "HEAD", {"claims": {"scp": "Reports.Read"}}, 200),
        ("/reports/q1", "DELETE", {"claims": {"scp": "Reports.Read"}}, 403),  # no fallback
        ("/healthz", "GET", None, 200),
    ],
)
async def test_rules_pick_by_longest_prefix_and_method(
    authority: Authority, make_gate: Any, path: str, method: str, options: Any, status: int
) -> None:
    token = None if options is None else mint(authority, **options)
    response = await ask(
        make_gate(RULES), "/", token, X_Forwarded_Uri=path, X_Forwarded_Method=method
    )
    assert response.status_code == status, response.headers


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"X_Original_URI": "/calc/1"},  # nginx without proxy_set_header X-Original-Method
        {"X_Forwarded_Method": "DELETE"},
        {"X_Original_URI": "/calc/1", "X_Original_Method": ""},
    ],
    ids=["path alone", "method alone", "empty method"],
)
async def test_half_an_original_request_is_a_400_not_the_sub_requests_own(
    authority: Authority, make_gate: Any, headers: dict[str, str]
) -> None:
    # An auth sub-request is a GET: judging DELETE /calc/1 as GET would open method rules.
    rules = {
        "route": [
            {"path": "/calc", "methods": ["GET"], "public": True},
            {"path": "/calc", "methods": ["DELETE"], "roles": ["adminRole"]},
        ]
    }
    response = await ask(make_gate(rules), "/calc/1", mint(authority), **headers)
    assert response.status_code == 400


@pytest.mark.anyio
async def test_no_default_rule_refuses_uncovered_paths_before_reading_the_token(
    make_gate: Any,
) -> None:
    response = await ask(
        make_gate({"route": [{"path": "/api", "roles": ["invokeRole"]}]}), "/other"
    )
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"X_Forwarded_Uri": "/admin", "X_Forwarded_Method": "GET"},  # Traefik
        {"X_Original_URI": "/admin?x=1", "X_Original_Method": "GET"},  # nginx
        {"X_Original_URI": "//admin/", "X_Original_Method": "GET"},
        {"X_Original_URI": "/admin/", "X_Original_Method": "GET"},
        {"X_Original_URI": "/admin/users?next=/../healthz", "X_Original_Method": "GET"},
    ],
)
async def test_the_original_path_is_judged_normalised(
    authority: Authority, make_gate: Any, headers: dict[str, str]
) -> None:
    # The gate's own path is public; the original one is /admin, which needs adminRole.
    response = await ask(make_gate(RULES), "/healthz", mint(authority), **headers)
    assert response.status_code == 403


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"X_Forwarded_Uri": "/healthz", "X_Original_URI": "/admin"},
        {"X_Forwarded_Method": "GET", "X_Original_Method": "POST"},
        {"X_Original_URI": "/api%2f..%2fadmin"},
        {"X_Original_URI": "/api/%252e%252e/admin"},
        {"X_Original_URI": "/../admin"},
        {"X_Original_URI": "/a%00b"},
        {"X_Original_URI": "/a%ffb"},
        {"X_Original_URI": "admin"},
        {"X_Original_Method": "G E T"},
        # What an upstream routing on the raw path reads as another path than the gate would:
        {"X_Original_URI": "/admin/../healthz"},  # dot segments, raw or encoded
        {"X_Original_URI": "/admin/%2e%2e/healthz"},
        {"X_Original_URI": "/admin/./x"},
        {"X_Original_URI": "/healthz/..;/admin"},  # ";": Tomcat reads /admin
        {"X_Original_URI": "/healthz;x"},
        {"X_Original_URI": "/healthz%3bx"},
        {"X_Original_URI": "/%68ealthz"},  # an encoded plain character
        {"X_Original_URI": "/healthz#/../admin"},  # a fragment
        {"X_Original_URI": "/HEALTHZ"},  # a route in another case
        {"X_Original_URI": "/Admin/users"},
        {"X_Original_URI": "/healthz", "X_HTTP_Method_Override": "DELETE"},
        {"X_Original_URI": "/healthz", "X_Method_Override": "POST"},
    ],
)
async def test_ambiguous_original_requests_are_400(make_gate: Any, headers: dict[str, str]) -> None:
    response = await ask(make_gate(RULES), "/healthz", **headers)
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("/", "/"),
        ("/a/b/", "/a/b"),
        ("//a//b", "/a/b"),
        ("/a%20b?q#f", "/a b"),
        ("/caf%C3%A9/x?/../y", "/café/x"),
        ("/a%23b", "/a#b"),
    ],
)
def test_normalized_path(raw: str, normal: str) -> None:
    assert normalized_path(raw) == normal


@pytest.mark.parametrize("raw", ["/a/../../b", "/a/b/..", "/a/./b", "/a/%2E", "/%7Euser", "/a%2Db"])
def test_normalized_path_refuses_what_an_upstream_could_read_otherwise(raw: str) -> None:
    with pytest.raises(InvalidRequestError):
        normalized_path(raw)


@pytest.mark.anyio
async def test_a_method_override_naming_the_same_method_is_allowed(
    authority: Authority, make_gate: Any
) -> None:
    response = await ask(make_gate(RULES), "/calc", mint(authority), X_HTTP_Method_Override="get")
    assert response.status_code == 200


@pytest.mark.anyio
async def test_upstream_headers_carry_clean_claims_only(
    authority: Authority, make_gate: Any
) -> None:
    gate = make_gate(upstream_headers={"X-Oid": "oid", "X-Evil": "evil", "X-Missing": "nope"})
    token = mint(authority, claims={"oid": "1234", "evil": "a\r\nSet-Cookie: x=1"})
    response = await ask(gate, "/", token)
    assert response.headers["x-oid"] == "1234"
    assert "x-evil" not in response.headers
    assert "x-missing" not in response.headers


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"route": [{"path": "api", "roles": ["r"]}]}, "path"),
        ({"route": [{"path": "/api/../x", "roles": ["r"]}]}, "normal form"),
        ({"route": [{"path": "/api"}]}, "public = true"),
        ({"route": [{"path": "/api", "roles": ["r"], "public": True}]}, "public = true"),
        ({"route": [{"path": "/api", "roles": ["r"], "methods": ["g e t"]}]}, "methods"),
        ({"route": [{"path": "/api", "roles": ["r"], "role": "x"}]}, "unknown key"),
        ({"route": [{"path": "/api", "roles": "r"}]}, "list"),
        ({"default": {"roles": ["r"], "path": "/"}}, "unknown key"),
        ({"routes": []}, "unknown table"),
        ({"route": {"path": "/"}}, "array"),
        ({"route": [{"path": "/api", "scopes": ["Calc Read"]}]}, "without spaces"),
        ({"default": {"roles": ["r"], "match": "some"}}, "match"),
        (
            {"route": [{"path": "/api", "roles": ["r"]}, {"path": "/API", "public": True}]},
            "differ only in case",
        ),
        (
            {"route": [{"path": "/api", "roles": ["r"]}, {"path": "/api", "public": True}]},
            "cover the same method",
        ),
        (
            {
                "route": [
                    {"path": "/api", "methods": ["GET"], "roles": ["r"]},
                    {"path": "/api", "methods": ["HEAD", "PUT"], "public": True},
                ]
            },
            "cover the same method",
        ),
    ],
)
def test_bad_rules_are_configuration_errors(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Rules.from_mapping(document)


CATCH_ALL = {"path": "/calc", "public": True}
DELETE_NEEDS_ADMIN = {"path": "/calc", "methods": ["DELETE"], "roles": ["admin"]}


@pytest.mark.parametrize(
    "routes",
    [[CATCH_ALL, DELETE_NEEDS_ADMIN], [DELETE_NEEDS_ADMIN, CATCH_ALL]],
    ids=["catch-all first", "catch-all last"],
)
def test_the_route_listing_the_method_wins_over_the_catch_all_in_any_order(
    routes: list[dict[str, Any]],
) -> None:
    rules = Rules.from_mapping({"route": routes})
    delete = rules.rule_for("/calc/x", "DELETE")
    assert delete is not None
    assert (delete.public, delete.access.roles) == (False, ("admin",))
    get = rules.rule_for("/calc/x", "GET")
    assert get is not None
    assert get.public


def test_rules_file_and_role_flags(tmp_path: Any) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[route]]\npath = "/api"\nroles = ["invokeRole"]\n')
    rules = build_rules(["invokeRole"], str(path))
    assert rules.default is not None
    assert rules.rule_for("/api/x", "GET") is not None
    path.write_text('[default]\nroles = ["x"]\n')
    with pytest.raises(ConfigurationError, match="both"):
        build_rules(["invokeRole"], str(path))
    with pytest.raises(ConfigurationError, match="--role or --rules"):
        build_rules([], None)
    path.write_text("not = = toml")
    with pytest.raises(ConfigurationError, match="not TOML"):
        build_rules([], str(path))
    path.write_bytes(b'[default]\nroles = ["\xff"]\n')  # not UTF-8
    with pytest.raises(ConfigurationError, match="not TOML"):
        build_rules([], str(path))


@pytest.mark.parametrize("value", ["X-Oid", "=oid", "X Oid=oid", "X-Ccflow-Roles=roles"])
def test_bad_upstream_headers_are_refused(value: str) -> None:
    with pytest.raises(ConfigurationError, match="upstream-header"):
        parse_upstream_headers([value])


@pytest.mark.parametrize(
    "headers", [{"X-Ccflow-Roles": "sub"}, {"x-ccflow-client-id": "sub"}, {"X Oid": "oid"}]
)
def test_a_gate_built_in_python_refuses_the_same_upstream_headers(
    make_gate: Any, headers: dict[str, str]
) -> None:
    # Gate(upstream_headers=...) is checked as --upstream-header is: a claim must never be
    # written over the identity headers the upstream trusts.
    with pytest.raises(ConfigurationError, match="upstream_headers"):
        make_gate(upstream_headers=headers)


# -- the refusals every face answers alike, logged and reported alike ---------------------

WHO = {"route": [{"path": "/who", "roles": ["invokeRole"], "scopes": ["Calc.Read"]}]}


@pytest.mark.anyio
@pytest.mark.parametrize(("case", "status", "challenge"), FACE_CASES)
async def test_every_face_answers_the_same(
    authority: Authority, make_gate: Any, case: str, status: int, challenge: str | None
) -> None:
    raw = face_token(case, TokenFactory(authority))
    response = await ask(make_gate(WHO), "/who", raw)
    assert response.status_code == status
    assert face_challenge_ok(case, response.headers.get("www-authenticate"), challenge)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("token", "headers", "logged"),
    [
        ("tampered", {"X_Original_URI": "/who?q=1", "X_Original_Method": "POST"}, "POST /who"),
        ("no_roles", {"X_Forwarded_Uri": "/who/x", "X_Forwarded_Method": "GET"}, "GET /who/x"),
        (None, {}, "GET /who"),  # Envoy: the sub-request's own
        (None, {"X_Original_URI": "/a%00b"}, "GET /a%00b"),  # the 400: as claimed
    ],
)
async def test_refusals_name_the_original_request_in_the_log_and_the_hook(
    authority: Authority,
    make_gate: Any,
    caplog: pytest.LogCaptureFixture,
    token: str | None,
    headers: dict[str, str],
    logged: str,
) -> None:
    seen: list[Refusal] = []
    raw = None if token is None else getattr(TokenFactory(authority), token)()
    with caplog.at_level(logging.INFO, logger="ccflow.api"):
        await ask(make_gate(WHO, on_refusal=seen.append), "/who", raw, **headers)
    method, path = logged.split(" ")
    assert (seen[0].method, seen[0].path) == (method, path)
    record = next(r for r in caplog.records if r.name == "ccflow.api")
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(f"refused {logged}: {seen[0].status}")
    if raw is not None:
        assert raw.split(".")[2] not in caplog.text


@pytest.mark.anyio
async def test_a_path_no_rule_covers_is_refused_without_reading_the_token(
    authority: Authority, make_gate: Any
) -> None:
    # The route refusal comes before validation: the log names no caller the token claims.
    seen: list[Refusal] = []
    forged = TokenFactory(authority).tampered()
    response = await ask(make_gate(WHO, on_refusal=seen.append), "/elsewhere", forged)
    assert response.status_code == 403
    assert (seen[0].reason, seen[0].client_id, seen[0].tenant_id) == ("route", None, None)


def test_a_bad_refusal_hook_is_refused_at_construction(make_gate: Any) -> None:
    with pytest.raises(ConfigurationError, match="on_refusal"):
        make_gate(on_refusal="metrics")


def test_a_rule_is_an_access_rule() -> None:
    rules = Rules.from_mapping(WHO)
    rule = rules.rule_for("/who/x", "GET")
    assert rule is not None
    assert (rule.access.roles, rule.access.scopes, rule.access.match) == (
        ("invokeRole",),
        ("Calc.Read",),
        "any",
    )


def test_the_traefik_sample_strips_every_client_ccflow_header() -> None:
    # Traefik removes a request's headers matching authResponseHeadersRegex, then copies the
    # gate's: the only way a client's X-Ccflow-Oid (an --upstream-header) cannot get through.
    sample = Path(__file__).resolve().parents[2] / "examples" / "gate" / "docker-compose.yml"
    labels = re.findall(r"forwardauth\.authResponseHeadersRegex=(\S+)", sample.read_text())
    assert len(labels) == 1
    for name in ("X-Ccflow-Client-Id", "X-Ccflow-Oid", "X_Ccflow_Roles", "x-ccflow-scopes"):
        assert re.search(labels[0], name), name
    assert not re.search(labels[0], "Authorization")
