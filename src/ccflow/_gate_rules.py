"""The gate's rules: which roles or scopes a path and method need, and the path they apply to.

No IO. A rules file (TOML)::

    [default]                  # paths no route covers; without it they are refused (403)
    roles = ["invokeRole"]

    [[route]]
    path = "/calc"             # this path and everything below it ("/calc/...")
    methods = ["GET", "POST"]  # optional; any method when absent (GET also allows HEAD)
    roles = ["invokeRole"]     # app tokens holding a role ...
    scopes = ["Calc.Read"]     # ... or delegated tokens holding a scope (scp)
    match = "any"              # or "all", for roles and scopes alike

    [[route]]
    path = "/healthz"
    public = true              # served without a token

Each route's roles, scopes and match make one :class:`~ccflow._core.claims.AccessRule`, the
rule every face checks (``RequireRole``, ``@require``, WSGI, Django). The longest route prefix
wins, on whole segments (``/calc`` covers ``/calc/add``, not ``/calculator``); among the routes
of that prefix, the one listing the method, else the one listing no methods, whatever their
order in the file (two routes of one path may not cover the same method). A method no route of
the longest prefix covers is refused, rather than falling back to a shorter prefix.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote

from ccflow._bearer import AccessRule, checked_rule
from ccflow.errors import ConfigurationError, InvalidRequestError

__all__ = ["Rule", "Rules", "checked_method", "normalized_path"]

_METHOD: Final = re.compile(r"[A-Z]{1,20}")
# Left in a decoded path: double encoding, a backslash, a control character, or a ";" (path
# parameters, which Java servers strip: "/public/..;/admin" is "/admin" to Tomcat).
_AMBIGUOUS: Final = re.compile(r"[%\\;\x00-\x1f\x7f]")
# A percent-encoded unreserved character (RFC 3986 2.3), which no client needs to encode:
# an upstream that routes on the raw path reads "/%70ublic" as another path than "/public".
_ENCODED_UNRESERVED: Final = re.compile(r"%(?:[46][1-9a-f]|[57][0-9a]|3[0-9]|2[de]|5f|7e)", re.I)
_ROUTE_KEYS: Final = frozenset({"path", "methods", "roles", "scopes", "match", "public"})
_DEFAULT_KEYS: Final = _ROUTE_KEYS - {"path", "methods"}


@dataclass(frozen=True, slots=True)
class Rule:
    """One route (or the default): the :class:`~ccflow._core.claims.AccessRule` a request to
    ``path`` with one of ``methods`` must pass (what every face checks), or ``public``."""

    access: AccessRule = field(default_factory=AccessRule)
    public: bool = False
    path: str = ""
    methods: frozenset[str] | None = None

    def allows_method(self, method: str) -> bool:
        """Whether the rule covers ``method`` (``HEAD`` rides on ``GET``)."""
        if self.methods is None:
            return True
        return method in self.methods or (method == "HEAD" and "GET" in self.methods)


class Rules:
    """Routes by path prefix and method, and the rule for paths no route covers."""

    def __init__(self, routes: Sequence[Rule] = (), default: Rule | None = None) -> None:
        self.default = default
        self._by_prefix: dict[str, list[Rule]] = {}
        self._folded: dict[str, str] = {}  # lower-cased route path -> the route path
        for route in routes:
            known = self._folded.setdefault(route.path.lower(), route.path)
            if known != route.path:
                raise ConfigurationError(f"routes {known} and {route.path} differ only in case")
            same_path = self._by_prefix.setdefault(route.path, [])
            if any(_overlap(route, other) for other in same_path):
                raise ConfigurationError(
                    f"two routes for {route.path} cover the same method; give each method"
                    " one route (a route without methods covers the methods no other lists)"
                )
            same_path.append(route)

    @classmethod
    def from_toml(cls, path: str, *, default: Rule | None = None) -> Rules:
        """Read a rules file; ``default`` (from ``--role``) must not clash with its own."""
        try:
            with open(path, "rb") as file:
                document = tomllib.load(file)
        except OSError as exc:
            raise ConfigurationError(f"--rules: cannot read {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"--rules: {path} is not TOML: {exc}") from None
        return cls.from_mapping(document, default=default, source=path)

    @classmethod
    def from_mapping(
        cls, document: Mapping[str, Any], *, default: Rule | None = None, source: str = "rules"
    ) -> Rules:
        """Rules from a parsed document (see the module docstring)."""
        unknown = set(document) - {"default", "route"}
        if unknown:
            raise ConfigurationError(f"{source}: unknown table(s): {', '.join(sorted(unknown))}")
        if "default" in document:
            if default is not None:
                raise ConfigurationError(f"{source}: [default] and --role both set the default")
            default = _rule(document["default"], f"{source} [default]", route=False)
        routes = document.get("route", [])
        if not isinstance(routes, list):
            raise ConfigurationError(f"{source}: route must be an array of tables ([[route]])")
        rules = [_rule(r, f"{source} route #{i + 1}", route=True) for i, r in enumerate(routes)]
        return cls(rules, default)

    def rule_for(self, path: str, method: str) -> Rule | None:
        """The rule for a normalised ``path`` and ``method``; ``None``: refused.

        ``InvalidRequestError`` for a path that is a route's in another case (``/ADMIN``): a
        case-insensitive upstream (ASP.NET, Express) serves it as the route.
        """
        prefix = path
        while True:
            routes = self._by_prefix.get(prefix)
            if routes is not None:
                return _route_for(routes, method)
            if prefix.lower() in self._folded:
                raise InvalidRequestError("the original request's path is a route in another case")
            if prefix == "/":
                return self.default
            prefix = prefix.rsplit("/", 1)[0] or "/"


def _overlap(a: Rule, b: Rule) -> bool:
    """Whether two routes of one path cover a method in common (both without methods: all)."""
    if a.methods is None or b.methods is None:
        return a.methods is None and b.methods is None
    return any(a.allows_method(m) for m in b.methods) or any(b.allows_method(m) for m in a.methods)


def _route_for(routes: Sequence[Rule], method: str) -> Rule | None:
    """Among one path's routes: the one listing ``method``, else the one listing none."""
    listed = next((r for r in routes if r.methods is not None and r.allows_method(method)), None)
    return listed or next((r for r in routes if r.methods is None), None)


def _strings(value: object, where: str, key: str) -> tuple[str, ...]:
    """A list of non-empty strings."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(value)


def _rule(table: object, where: str, *, route: bool) -> Rule:
    """One ``[[route]]`` or ``[default]`` table, checked."""
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"{where}: must be a table")
    unknown = set(table) - (_ROUTE_KEYS if route else _DEFAULT_KEYS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")
    roles = _strings(table.get("roles", []), where, "roles")
    scopes = _strings(table.get("scopes", []), where, "scopes")
    access = checked_rule(where, roles, scopes, table.get("match", "any"))
    public = table.get("public", False)
    if not isinstance(public, bool):
        raise ConfigurationError(f"{where}: public must be true or false")
    if public == bool(roles or scopes):
        raise ConfigurationError(f"{where}: give roles and/or scopes, or public = true")
    if not route:
        return Rule(access, public)
    path = table.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"{where}: path must be a string starting with '/'")
    try:
        normal = normalized_path(path) == (path.rstrip("/") or "/")
    except InvalidRequestError:
        normal = False
    if not normal:
        raise ConfigurationError(f"{where}: path {path!r} is not in normal form")
    methods = None
    if "methods" in table:
        methods = frozenset(m.upper() for m in _strings(table["methods"], where, "methods"))
        if not all(_METHOD.fullmatch(m) for m in methods):
            raise ConfigurationError(f"{where}: methods must be HTTP method names")
    return Rule(access, public, path.rstrip("/") or "/", methods)


def normalized_path(raw: str) -> str:
    """The path a rule is matched against: query dropped, percent-decoded once, repeated
    slashes merged, no trailing slash.

    Raises ``InvalidRequestError`` (400) for what an upstream might read differently: an
    encoded ``/``, ``\\``, unreserved character or control character, a ``%`` left after
    decoding (double encoding), a ``;``, a ``#``, a ``.`` or ``..`` segment (an upstream that
    routes on the raw path does not resolve it), or not a path at all.
    """
    path = raw.split("?", 1)[0]
    if not path.startswith("/"):
        raise InvalidRequestError("the original request's path is not an absolute path")
    if "#" in path:
        raise InvalidRequestError("the original request's path holds a fragment")
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered:
        raise InvalidRequestError("the original request's path holds an encoded slash")
    if _ENCODED_UNRESERVED.search(path):
        raise InvalidRequestError("the original request's path encodes a plain character")
    try:
        decoded = unquote(path, errors="strict") if "%" in path else path
    except UnicodeDecodeError:
        raise InvalidRequestError("the original request's path is not UTF-8") from None
    if _AMBIGUOUS.search(decoded):
        raise InvalidRequestError("the original request's path is ambiguous once decoded")
    segments = [segment for segment in decoded.split("/") if segment]
    if "." in segments or ".." in segments:
        raise InvalidRequestError("the original request's path holds a . or .. segment")
    return "/" + "/".join(segments)


def checked_method(raw: str) -> str:
    """An HTTP method name, or ``InvalidRequestError``."""
    if _METHOD.fullmatch(raw) is None:
        raise InvalidRequestError("the original request's method is not an HTTP method")
    return raw
