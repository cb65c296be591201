"""Django: bearer access tokens for views, through a middleware and a view decorator.

::

    # settings.py
    MIDDLEWARE = [..., "ccflow.django.BearerTokenMiddleware"]
    CCFLOW_VALIDATOR = {"tenant_id": "...", "audience": ["api://calc"]}  # optional

    # views.py
    from ccflow.django import require_role

    @require_role("invokeRole")
    def add(request, a, b):
        return JsonResponse({"result": a + b, "caller": request.ccflow.client_id})

:class:`BearerTokenMiddleware` validates the bearer token of every request that has one and
sets ``request.ccflow``: the verdict (a :class:`~ccflow.ValidatedToken`: ``client_id``,
``tenant_id``, ``roles``, ``claims``), or ``None`` when the request has no bearer token. A
request with a bad token is refused at once (RFC 6750: 400, 401, 403 or 503, as
:mod:`ccflow.wsgi` answers). :func:`require_role` refuses a view to a request without a token
(401) or without the roles (403).

The validator: the ``CCFLOW_VALIDATOR`` setting, a ``TokenValidator`` or a dict of its
arguments; without it, ``TokenValidator.from_env()`` (the ``CCFLOW_*`` environment). It is
built when Django builds the middleware (the first request, or ``runserver``'s start), and a
bad value raises ``ConfigurationError`` naming the setting or variable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from ccflow._bearer import Match, Rejection, checked_roles, rejection_for
from ccflow.errors import ConfigurationError
from ccflow.validation import TokenValidator
from ccflow.wsgi import SyncValidator, authenticate_sync, checked_sync_validator

__all__ = ["BearerTokenMiddleware", "require_role", "validator_from_settings"]

_REALM = "_ccflow_realm"  # the request attribute the decorator reads the realm from
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


def _response(rejection: Rejection) -> HttpResponse:
    """The RFC 6750 answer as a Django response."""
    response = HttpResponse(
        rejection.body, status=rejection.status, content_type="application/json"
    )
    for name, value in rejection.headers.items():
        response[name] = value
    return response


class BearerTokenMiddleware:
    """Sets ``request.ccflow`` (the verdict, or ``None`` without a bearer token); refuses a
    request whose token is bad. Add ``"ccflow.django.BearerTokenMiddleware"`` to
    ``MIDDLEWARE``."""

    sync_capable = True
    async_capable = False  # validate_sync blocks: Django runs it in a thread under ASGI

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.validator = validator_from_settings()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Validate the request's bearer token, then call the view or send the refusal."""
        realm = self.validator.realm
        try:
            verdict = authenticate_sync(request.META, self.validator)
        except Exception as exc:  # every refusal, and validator bugs: never a 500
            return _response(rejection_for(exc, realm))
        request.ccflow = verdict
        setattr(request, _REALM, realm)
        return self.get_response(request)


def require_role(*roles: str, match: Match = "any") -> Callable[[View], View]:
    """A view decorator: 401 without a bearer token, 403 without the roles (any, or all with
    ``match="all"``), as ``RequireRole`` answers. Needs :class:`BearerTokenMiddleware`."""
    if not roles:
        raise ConfigurationError("require_role needs at least one role", setting="roles")
    if callable(roles[0]):
        raise ConfigurationError(
            "require_role(...) takes roles: write @require_role('invokeRole'), not @require_role",
            setting="roles",
        )
    wanted = checked_roles("require_role", roles, match)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not hasattr(request, _REALM):
                raise ConfigurationError(
                    "require_role needs ccflow.django.BearerTokenMiddleware in MIDDLEWARE",
                    setting="MIDDLEWARE",
                )
            realm: str = getattr(request, _REALM)
            verdict = getattr(request, "ccflow", None)
            if verdict is None:
                return _response(rejection_for(None, realm))
            try:
                verdict.require_roles(wanted, match=match)
            except Exception as exc:
                return _response(rejection_for(exc, realm))
            return view(request, *args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate
