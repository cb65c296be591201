"""Call the calc API with a token from ``TokenClient`` (the caller side of the flow).

Run from the repository root::

    AZURE_TENANT_ID=<tenant> AZURE_CLIENT_ID=<client app id> AZURE_CLIENT_SECRET=<secret> \\
    CALC_API_SCOPE=<api App ID URI>/.default CALC_API_URL=http://127.0.0.1:8000 \\
    python -m examples.calc_api.client 2 3

prints ``{"result": 5, "caller": "<client app id>"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from ccflow import CCFlowError, ConfigurationError, TokenClient

__all__ = ["add", "main"]


def add(a: str, b: str, *, tokens: TokenClient, scope: str, api: httpx.Client) -> Any:
    """``GET /calc/v1/add/{a}/{b}`` with a bearer token for ``scope``; the decoded JSON answer.

    ``tokens`` caches the token until shortly before it expires, so calling this in a loop
    asks the authority once.
    """
    token = tokens.get_token(scope)
    # Each number is one path segment, whatever it holds: "1#", "1?x" or "1/2" would otherwise
    # call another URL, and a control character made httpx raise InvalidURL.
    path = f"/calc/v1/add/{quote(a, safe='')}/{quote(b, safe='')}"
    response = api.get(path, headers={"Authorization": f"Bearer {token.token}"})
    if response.status_code != 200:
        # A refusal explains itself in WWW-Authenticate; other errors (a 400 for a number
        # that is not one, a 503) in the JSON body.
        detail = response.headers.get("www-authenticate") or _error_description(response)
        raise httpx.HTTPStatusError(
            f"calc API answered {response.status_code} {detail}".rstrip(),
            request=response.request,
            response=response,
        )
    try:
        return response.json()
    except ValueError:  # CALC_API_URL names something else: say so, not a JSON traceback
        raise httpx.DecodingError(
            f"calc API answered {response.status_code} with a body that is not JSON "
            f"(is CALC_API_URL the calc API?)",
            request=response.request,
        ) from None


def _error_description(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    description = body.get("error_description") if isinstance(body, dict) else None
    return description if isinstance(description, str) else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``python -m examples.calc_api.client A B``."""
    parser = argparse.ArgumentParser(description="Add two numbers with the calc API.")
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    # Empty is unset, as for the AZURE_* variables (`export CALC_API_URL=`).
    url = os.environ.get("CALC_API_URL") or "http://127.0.0.1:8000"
    try:
        scope = os.environ.get("CALC_API_SCOPE")
        if not scope:
            raise ConfigurationError(
                "CALC_API_SCOPE is not set: calc-api's Application ID URI + /.default "
                "(e.g. api://<calc-api client id>/.default)",
                setting="CALC_API_SCOPE",
            )
        try:
            api = httpx.Client(base_url=url, timeout=10)
        except httpx.InvalidURL as exc:  # not an httpx.HTTPError: it was a traceback
            raise ConfigurationError(
                f"CALC_API_URL is not a valid URL ({exc}), got {url!r}", setting="CALC_API_URL"
            ) from None
        if api.base_url.scheme not in ("http", "https") or not api.base_url.host:
            # "127.0.0.1:8000" got a token first, then httpx's "Request URL is missing an
            # 'http://' or 'https://' protocol", which did not name the variable.
            api.close()
            raise ConfigurationError(
                f"CALC_API_URL must be an http:// or https:// URL, got {url!r}",
                setting="CALC_API_URL",
            )
        with api, TokenClient.from_env() as tokens:
            print(json.dumps(add(args.a, args.b, tokens=tokens, scope=scope, api=api)))
    except httpx.TransportError as exc:
        # From the API call (TokenClient raises CCFlowError): name what was called, not just
        # "[Errno 111] Connection refused".
        print(
            f"error: calling the calc API at {url} failed ({type(exc).__name__}: {exc}); "
            "is it running, and is CALC_API_URL right?",
            file=sys.stderr,
        )
        return 1
    except (CCFlowError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
