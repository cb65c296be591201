"""The gate: forward authentication for nginx ``auth_request``, Traefik ``ForwardAuth`` and
Envoy's HTTP ``ext_authz``, so an API written in anything is protected by ccflow's checks.

::

    ccflow gate --role invokeRole --port 9000            # or, as an ASGI app:
    uvicorn --factory ccflow.gate:from_env               # CCFLOW_GATE_ROLES / CCFLOW_GATE_RULES

The proxy asks the gate about each request; the gate answers on any path:

- ``200`` with the caller's identity in ``X-Ccflow-Client-Id``, ``X-Ccflow-Tenant-Id``,
  ``X-Ccflow-Roles`` and ``X-Ccflow-Scopes`` (space-separated), plus any ``--upstream-header``
  claims, for the proxy to pass upstream; a public route gets ``200`` without them;
- otherwise the RFC 6750 refusal ``RequireRole`` sends (400, 401, 403, 503), with
  ``WWW-Authenticate`` and ``X-Ccflow-Error`` (the error code, for proxies that rebuild the
  body).

The original request's path and method come from ``X-Forwarded-Uri``/``X-Forwarded-Method``
(Traefik), ``X-Original-URI``/``X-Original-Method`` (nginx), else the request's own (Envoy
sends the original path). Different values in two of them are refused (400): a client could
have sent one of them; so is an ``X-HTTP-Method-Override`` (or ``X-HTTP-Method``,
``X-Method-Override``) naming another method. The path is normalised (see
:func:`ccflow._gate_rules.normalized_path`) before the rules
(:class:`~ccflow._gate_rules.Rules`) pick what it needs; docs/gate.md says which proxy
settings keep identity headers from being spoofed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from ccflow._bearer import (
    RefusalHook,
    Validator,
    ValidatorHolder,
    Verdict,
    authenticate,
    checked_hook,
    checked_rule,
    refuse,
)
from ccflow._gate_rules import Rule, Rules, checked_method, normalized_path
from ccflow.errors import ConfigurationError, InsufficientScopeError, InvalidRequestError

__all__ = ["IDENTITY_HEADERS", "Gate", "Rule", "Rules", "from_env", "parse_upstream_headers"]

IDENTITY_HEADERS: Final = ("x-ccflow-client-id", "x-ccflow-tenant-id", "x-ccflow-roles")
"""The identity headers a 200 always carries (``x-ccflow-scopes`` too when ``scp`` is set)."""

_URI_HEADERS: Final = (b"x-forwarded-uri", b"x-original-uri")
_METHOD_HEADERS: Final = (b"x-forwarded-method", b"x-original-method")
# Headers with which frameworks (Express method-override, Spring, ASP.NET) let a client run
# another method than the one the proxy saw.
_OVERRIDE_HEADERS: Final = (b"x-http-method-override", b"x-http-method", b"x-method-override")
_HEADER_NAME: Final = re.compile(r"[A-Za-z0-9-]{1,64}")
_VALUE: Final = re.compile(r"[\x20-\x7e]*")


class Gate:
    """An ASGI app that answers authorization sub-requests by ``rules``.

    - ``rules``: :class:`~ccflow._gate_rules.Rules` (routes, and the default for other paths);
    - ``validator``: a ``ccflow.TokenValidator``; without one, ``TokenValidator.from_env()``
      on first use, closed on lifespan shutdown;
    - ``upstream_headers``: extra response headers from claims, ``{"X-Ccflow-Oid": "oid"}``;
    - ``on_refusal``: called with a :class:`~ccflow.starlette.Refusal` for each refusal, which
      is also logged at INFO on ``ccflow.api`` with the original method and path, as every
      face logs its refusals.
    """

    def __init__(
        self,
        rules: Rules,
        *,
        validator: Validator | None = None,
        upstream_headers: Mapping[str, str] | None = None,
        on_refusal: RefusalHook | None = None,
    ) -> None:
        self.rules = rules
        self._holder = ValidatorHolder(validator, "Gate")
        self.upstream_headers = _checked_headers(
            (upstream_headers or {}).items(), "upstream_headers"
        )
        self.on_refusal = checked_hook(on_refusal, "Gate")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answer one sub-request (HTTP), or run the lifespan."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"the gate answers HTTP only, not {scope['type']!r}")
        status, headers = await self.decide(scope)
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b""})

    async def decide(self, scope: Mapping[str, Any]) -> tuple[int, dict[str, str]]:
        """The answer to a sub-request: status and headers."""
        validator = self._holder.validator
        method = path = ""
        try:
            method, path = original_request(scope)
            rule = self.rules.rule_for(path, method)
            if rule is None:
                raise InsufficientScopeError(
                    f"no rule allows {method} on this path", reason="route", required=()
                )
            if rule.public:
                return 200, {"cache-control": "no-store"}
            verdict = await authenticate(scope["headers"], validator, rule.access)
            if verdict is None:
                return self._refusal(None, scope, method, path)
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            return self._refusal(exc, scope, method, path)
        return 200, self._identity(verdict)

    def _refusal(
        self, exc: BaseException | None, scope: Mapping[str, Any], method: str, path: str
    ) -> tuple[int, dict[str, str]]:
        """The refusal's status and headers, logged and reported as every face's."""
        if not path:  # the original request is itself the reason: named as claimed
            method, path = _claimed_request(scope)
        rejection = refuse(
            exc,
            self._holder.validator.realm,
            method=method,
            path=path,
            hook=self.on_refusal,
        )
        headers = rejection.headers
        headers["x-ccflow-error"] = rejection.error or "unauthorized"
        return rejection.status, headers

    def _identity(self, verdict: Verdict) -> dict[str, str]:
        """The identity headers of an allowed request (values that are no clean ASCII
        text are left out rather than passed upstream)."""
        values: dict[str, object] = {
            "x-ccflow-client-id": verdict.client_id or "",
            "x-ccflow-tenant-id": verdict.tenant_id or "",
            "x-ccflow-roles": " ".join(verdict.roles),
        }
        scp = verdict.claims.get("scp")
        if isinstance(scp, str):
            values["x-ccflow-scopes"] = scp
        for name, claim in self.upstream_headers.items():
            values[name.lower()] = verdict.claims.get(claim)
        headers = {"cache-control": "no-store"}
        for name, value in values.items():
            text = _header_value(value)
            if text is not None:
                headers[name] = text
        return headers

    async def _lifespan(self, receive: Any, send: Any) -> None:
        """Build the validator at start-up (a bad variable stops the server); close it at
        shutdown if the gate built it."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._holder.validator  # noqa: B018 - built now, so errors show at start
                except ConfigurationError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._holder.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _header_value(value: object) -> str | None:
    """A claim as a header value: a string, a number or a list of strings (space-joined);
    ``None`` for anything else or for text with control or non-ASCII characters."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = " ".join(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if _VALUE.fullmatch(text) else None


def _forwarded(headers: Any) -> tuple[list[bytes], list[bytes]]:
    """The values of the proxy headers that name the original method and URI (one pass)."""
    methods: list[bytes] = []
    uris: list[bytes] = []
    for name, value in headers:
        name = name.lower()
        if name in _METHOD_HEADERS:
            methods.append(value)
        elif name in _URI_HEADERS:
            uris.append(value)
    return methods, uris


def _one(values: list[bytes], what: str) -> str | None:
    """The one value of ``values``, ``None`` when there is none; ``InvalidRequestError`` when
    they disagree."""
    if not values:
        return None
    if len(values) > 1 and len(set(values)) > 1:
        raise InvalidRequestError(f"conflicting headers for the original request's {what}")
    return values[0].decode("latin-1")


def _claimed_request(scope: Mapping[str, Any]) -> tuple[str, str]:
    """The original request's method and path as the headers give them, unchecked: what a
    refusal's log line names when they are themselves the reason (400)."""
    methods, uris = _forwarded(scope["headers"])
    return (
        methods[0].decode("latin-1") if methods else scope["method"],
        uris[0].decode("latin-1") if uris else scope["path"],
    )


def original_request(scope: Mapping[str, Any]) -> tuple[str, str]:
    """The original request's method and normalised path (see the module docstring)."""
    methods, uris = _forwarded(scope["headers"])
    method, uri = _one(methods, "method"), _one(uris, "path")
    if (method is None) != (uri is None):
        # Half the original request: the sub-request's own method or path stands for nothing.
        raise InvalidRequestError("the proxy sent the original request's path or method alone")
    if method is None or uri is None:  # no proxy headers: the request is the original (Envoy)
        raw_path = scope.get("raw_path")
        method, uri = scope["method"], raw_path.decode("latin-1") if raw_path else scope["path"]
    method = checked_method(method.upper())
    for name, value in scope["headers"]:
        if name.lower() in _OVERRIDE_HEADERS and value.decode("latin-1").upper() != method:
            raise InvalidRequestError("a method override header names another method")
    return method, normalized_path(uri)


def parse_upstream_headers(values: list[str]) -> dict[str, str]:
    """``--upstream-header NAME=CLAIM`` values as ``{NAME: CLAIM}``."""
    pairs = []
    for value in values:
        name, equals, claim = value.partition("=")
        if not equals:
            raise ConfigurationError(
                f"--upstream-header must be NAME=CLAIM (such as X-Ccflow-Oid=oid), got {value!r}",
                setting="upstream-header",
            )
        pairs.append((name, claim))
    return _checked_headers(pairs, "--upstream-header")


def _checked_headers(pairs: Iterable[tuple[object, object]], setting: str) -> dict[str, str]:
    """Extra header names and their claims: header-name syntax, never one of the gate's own."""
    found: dict[str, str] = {}
    for name, claim in pairs:
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigurationError(f"{setting}: {name!r} is not a header name", setting=setting)
        if not isinstance(claim, str) or not claim:
            raise ConfigurationError(f"{setting}: {name}'s claim must be a name", setting=setting)
        if name.lower() in (*IDENTITY_HEADERS, "x-ccflow-scopes", "x-ccflow-error"):
            raise ConfigurationError(
                f"{setting} {name} is one of the gate's own headers",
                setting=setting.lstrip("-"),
            )
        found[name] = claim
    return found


def gate_rules(roles: list[str], rules_file: str | None) -> Rules:
    """The rules from ``--role`` values (the default rule) and a ``--rules`` file."""
    default = Rule(checked_rule("--role", tuple(roles))) if roles else None
    if rules_file:
        return Rules.from_toml(rules_file, default=default)
    if default is None:
        raise ConfigurationError("the gate needs --role or --rules (or both)", setting="role")
    return Rules((), default)


def from_env(environ: Mapping[str, str] | None = None) -> Gate:
    """A gate configured from the environment, for ``uvicorn --factory ccflow.gate:from_env``:
    ``CCFLOW_GATE_ROLES`` (comma-separated, the default rule), ``CCFLOW_GATE_RULES`` (a rules
    file) and ``CCFLOW_GATE_UPSTREAM_HEADERS`` (comma-separated ``NAME=CLAIM``); the validator
    from the ``CCFLOW_*`` variables, as ``TokenValidator.from_env()`` reads them."""
    env = os.environ if environ is None else environ
    roles = [r.strip() for r in env.get("CCFLOW_GATE_ROLES", "").split(",") if r.strip()]
    extra = [h.strip() for h in env.get("CCFLOW_GATE_UPSTREAM_HEADERS", "").split(",")]
    return Gate(
        gate_rules(roles, env.get("CCFLOW_GATE_RULES") or None),
        upstream_headers=parse_upstream_headers([h for h in extra if h]),
    )
