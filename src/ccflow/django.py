"""Django: bearer access tokens for views, through a middleware and view decorators.

::

    # settings.py
    MIDDLEWARE = [..., "ccflow.django.BearerTokenMiddleware"]
    CCFLOW_VALIDATOR = {"tenant_id": "...", "audience": ["api://calc"]}  # optional
    CCFLOW_ON_REFUSAL = "myproject.metrics.count_refusal"                 # optional

    # views.py
    from ccflow.django import require_role, require_scope

    @require_role("invokeRole")
    def add(request, a, b):
        return JsonResponse({"result": a + b, "caller": request.ccflow.client_id})

    @require_scope("Calc.Read", or_roles=["invokeRole"])   # a user's scope, or an app's role
    def read(request): ...

:class:`BearerTokenMiddleware` validates the bearer token of every request that has one and
sets ``request.ccflow``: the caller, a :class:`~ccflow._bearer.Principal` (what
``ccflow.fastapi.BearerClaims`` returns: ``client_id``, ``tenant_id``, ``roles``, ``scopes``,
``object_id``, ``claims``), or ``None`` when the request has no bearer token. A request with
a bad token is refused at once (RFC 6750: 400, 401, 403 or 503, as :mod:`ccflow.wsgi`
answers). :func:`require_role` and :func:`require_scope` refuse a view to a request without a
token (401) or without the roles or scopes (403, naming them in ``scope``). Every refusal is
logged at INFO on ``ccflow.api`` and given to the ``CCFLOW_ON_REFUSAL`` hook (a callable, or
its dotted path), as the ASGI faces do.

The validator: the ``CCFLOW_VALIDATOR`` setting, a ``TokenValidator`` or a dict of its
arguments; without it, ``TokenValidator.from_env()`` (the ``CCFLOW_*`` environment). It is
built when Django builds the middleware (the first request, or ``runserver``'s start), and a
bad value raises ``ConfigurationError`` naming the setting or variable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from ccflow._bearer import (
    AccessRule,
    Match,
    Principal,
    RefusalHook,
    Rejection,
    SyncValidator,
    authenticate_blocking,
    checked_hook,
    listed,
    refuse,
    required_rule,
)
from ccflow.errors import ConfigurationError
from ccflow.validation import TokenValidator
from ccflow.wsgi import authorization_headers, checked_sync_validator

__all__ = [
    "BearerTokenMiddleware",
    "hook_from_settings",
    "require_role",
    "require_scope",
    "validator_from_settings",
]

_GUARD = "_ccflow_guard"  # the request attribute the decorators read the realm and hook from
View = TypeVar("View", bound=Callable[..., HttpResponse])


def validator_from_settings() -> SyncValidator:
    """The validator ``CCFLOW_VALIDATOR`` names (an instance or a dict of arguments), else
    ``TokenValidator.from_env()``."""
    given = getattr(settings, "CCFLOW_VALIDATOR", None)
    if given is None:
        return TokenValidator.from_env()
    if isinstance(given, Mapping):
        try:
            return TokenValidator(**given)
        except TypeError as exc:  # an unknown key
            raise ConfigurationError(
                f"CCFLOW_VALIDATOR: {exc}", setting="CCFLOW_VALIDATOR"
            ) from None
    return checked_sync_validator(given, "CCFLOW_VALIDATOR")


def hook_from_settings() -> RefusalHook | None:
    """The ``on_refusal`` hook ``CCFLOW_ON_REFUSAL`` names (a callable or its dotted path)."""
    given = getattr(settings, "CCFLOW_ON_REFUSAL", None)
    if isinstance(given, str):
        try:
            given = import_string(given)
        except ImportError as exc:
            raise ConfigurationError(
                f"CCFLOW_ON_REFUSAL: cannot import {given!r}: {exc}", setting="CCFLOW_ON_REFUSAL"
            ) from None
    return checked_hook(given, "CCFLOW_ON_REFUSAL")


@dataclass(frozen=True, slots=True)
class _Guard:
    """What the decorators need from the middleware: the realm and the refusal hook."""

    realm: str
    on_refusal: RefusalHook | None


def _response(rejection: Rejection) -> HttpResponse:
    """The RFC 6750 answer as a Django response."""
    response = HttpResponse(
        rejection.body, status=rejection.status, content_type="application/json"
    )
    for name, value in rejection.headers.items():
        response[name] = value
    return response


class BearerTokenMiddleware:
    """Sets ``request.ccflow`` (the caller, a ``Principal``, or ``None`` without a bearer
    token); refuses a request whose token is bad. Add ``"ccflow.django.BearerTokenMiddleware"``
    to ``MIDDLEWARE``."""

    sync_capable = True
    async_capable = False  # validate_sync blocks: Django runs it in a thread under ASGI

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.validator = validator_from_settings()
        self.guard = _Guard(self.validator.realm, hook_from_settings())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Validate the request's bearer token, then call the view or send the refusal."""
        headers = authorization_headers(request.META)
        try:
            verdict = authenticate_blocking(headers, self.validator)
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            return _refuse(exc, self.guard, request)
        request.ccflow = None if verdict is None else Principal.of(verdict)
        setattr(request, _GUARD, self.guard)
        return self.get_response(request)


def _refuse(
    exc: BaseException | None,
    guard: _Guard,
    request: HttpRequest,
    *,
    caller: Principal | None = None,
) -> HttpResponse:
    """The answer to a refused request, logged and reported as every face does; the log
    names ``caller`` when a view's rule refused it."""
    rejection = refuse(
        exc,
        guard.realm,
        method=request.method or "",
        path=request.path_info,
        hook=guard.on_refusal,
        verdict=caller,
    )
    return _response(rejection)


def require_role(
    *roles: str, match: Match = "any", or_scopes: Iterable[str] = ()
) -> Callable[[View], View]:
    """A view decorator: 401 without a bearer token, 403 without the roles (any, or all with
    ``match="all"``) or else the delegated ``or_scopes``, as ``RequireRole`` answers. Needs
    :class:`BearerTokenMiddleware`."""
    _refuse_a_view("require_role", roles, "roles")
    return _guarded(required_rule("require_role", roles, or_scopes, match), "require_role")


def require_scope(
    *scopes: str, match: Match = "any", or_roles: Iterable[str] = ()
) -> Callable[[View], View]:
    """A view decorator: 401 without a bearer token, 403 without the delegated scopes
    (``scp``; any, or all with ``match="all"``) or else the app roles ``or_roles``, as
    ``RequireScope`` answers. Needs :class:`BearerTokenMiddleware`."""
    _refuse_a_view("require_scope", scopes, "scopes")
    if not scopes:
        raise ConfigurationError("require_scope needs at least one scope", setting="scopes")
    roles = listed(or_roles, "require_scope", "or_roles")
    return _guarded(required_rule("require_scope", roles, scopes, match), "require_scope")


def _refuse_a_view(name: str, values: tuple[object, ...], what: str) -> None:
    """Refuse ``@name`` written without its parentheses (the view taken for a role)."""
    if values and callable(values[0]):
        example = "invokeRole" if what == "roles" else "Calc.Read"
        raise ConfigurationError(
            f"{name}(...) takes {what}: write @{name}('{example}'), not @{name}", setting=what
        )


def _guarded(rule: AccessRule, name: str) -> Callable[[View], View]:
    """The decorator that checks ``rule`` on the caller the middleware found."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            guard = getattr(request, _GUARD, None)
            if not isinstance(guard, _Guard):
                raise ConfigurationError(
                    f"{name} needs ccflow.django.BearerTokenMiddleware in MIDDLEWARE",
                    setting="MIDDLEWARE",
                )
            caller: Principal | None = getattr(request, "ccflow", None)
            if caller is None:
                return _refuse(None, guard, request)
            try:
                rule.check(caller)
            except Exception as exc:
                return _refuse(exc, guard, request, caller=caller)
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate
