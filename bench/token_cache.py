"""Cache-hit cost of ccflow's TokenClient / AsyncTokenClient beside msal and azure-identity.

All four clients get one token from ccflow's in-process local authority (through fake
transports: no sockets) and are then timed on cache hits only; the authority's token hit count
is checked before and after each timing loop, so a hit that secretly fetched would fail loudly.

    .venv/bin/python bench/token_cache.py          # a few seconds

Prints microseconds per call (best of several rounds) and each baseline's ratio to
TokenClient. Target: TokenClient at most 1 us per hit.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import msal
import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import ClientSecretCredential
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.response import HTTPResponse

from ccflow import AsyncTokenClient, TokenClient
from ccflow.authority import Authority

ROUNDS = 5


class AuthorityAdapter(BaseAdapter):
    """A requests transport adapter answering from the in-process authority (msal's and
    azure-identity's HTTP both go through requests)."""

    def __init__(self, authority: Authority) -> None:
        super().__init__()
        self.authority = authority

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        body = request.body or b""
        answer = self.authority.handle(
            httpx.Request(
                request.method or "GET",
                request.url or "",
                headers=dict(request.headers),
                content=body.encode() if isinstance(body, str) else body,
            )
        )
        response = requests.Response()
        response.status_code = answer.status_code
        response._content = answer.content
        # azure-core's requests transport touches the urllib3 response underneath.
        response.raw = HTTPResponse(
            body=io.BytesIO(answer.content),
            headers=dict(answer.headers),
            status=answer.status_code,
            preload_content=False,
        )
        response.headers = CaseInsensitiveDict(answer.headers)
        response.url = request.url or ""
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def session_for(authority: Authority) -> requests.Session:
    session = requests.Session()
    session.mount("https://", AuthorityAdapter(authority))
    return session


def per_call_us(loop: Callable[[int], None], n: int) -> float:
    """Best-of-ROUNDS microseconds per call of ``loop(n)``."""
    loop(min(n, 1000))  # warm up
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        loop(n)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def bench_ccflow_sync(authority: Authority, scope: str) -> float:
    app = authority.client("calc-client")
    client = TokenClient(
        client_id=app.client_id,
        client_secret=app.secret,
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        http_client=httpx.Client(transport=authority.transport()),
    )
    client.get_token(scope)
    get = client.get_token

    def loop(n: int) -> None:
        for _ in range(n):
            get(scope)

    return checked(authority, lambda: per_call_us(loop, 300_000))


def bench_ccflow_async(authority: Authority, scope: str) -> float:
    app = authority.client("calc-client")

    async def main() -> float:
        client = AsyncTokenClient(
            client_id=app.client_id,
            client_secret=app.secret,
            tenant_id=authority.tenant_id,
            authority_host=authority.host,
            http_client=httpx.AsyncClient(transport=authority.transport()),
        )
        await client.get_token(scope)
        fetched = authority.hits["token"]
        get = client.get_token

        async def hits(n: int) -> None:
            for _ in range(n):
                await get(scope)

        best = float("inf")
        n = 200_000
        await hits(1000)
        for _ in range(ROUNDS):
            start = time.perf_counter()
            await hits(n)
            best = min(best, time.perf_counter() - start)
        await client.aclose()
        assert authority.hits["token"] == fetched == 1, "a timed call fetched: not a cache hit"
        return best / n * 1e6

    return asyncio.run(main())


def bench_msal(authority: Authority, scope: str) -> float:
    app = msal.ConfidentialClientApplication(
        authority.client("calc-client").client_id,
        client_credential=authority.client("calc-client").secret,
        authority=f"{authority.host}/{authority.tenant_id}",
        instance_discovery=False,
        http_client=session_for(authority),
    )
    first = app.acquire_token_for_client([scope])
    assert "access_token" in first, first
    assert first.get("token_source") == "identity_provider"
    again = app.acquire_token_for_client([scope])
    assert again.get("token_source") == "cache", again.get("token_source")

    def loop(n: int) -> None:
        for _ in range(n):
            app.acquire_token_for_client([scope])

    return checked(authority, lambda: per_call_us(loop, 20_000))


def bench_azure_identity(authority: Authority, scope: str) -> float:
    app = authority.client("calc-client")
    assert app.secret is not None
    credential = ClientSecretCredential(
        authority.tenant_id,
        app.client_id,
        app.secret,
        authority=authority.host,
        disable_instance_discovery=True,
        transport=RequestsTransport(session=session_for(authority), session_owner=False),
    )
    credential.get_token(scope)

    def loop(n: int) -> None:
        for _ in range(n):
            credential.get_token(scope)

    return checked(authority, lambda: per_call_us(loop, 10_000))


def checked(authority: Authority, measure: Callable[[], float]) -> float:
    before = authority.hits["token"]
    assert before >= 1, "the client never fetched a token"
    result = measure()
    assert authority.hits["token"] == before, "a timed call fetched a token: not a cache hit"
    return result


def main() -> None:
    # azure-identity and msal log each call at INFO/DEBUG; keep logging out of the timings.
    logging.disable(logging.CRITICAL)
    results: dict[str, float] = {}
    for name, bench in [
        ("ccflow TokenClient.get_token", bench_ccflow_sync),
        ("ccflow AsyncTokenClient.get_token", bench_ccflow_async),
        ("msal acquire_token_for_client", bench_msal),
        ("azure-identity ClientSecretCredential.get_token", bench_azure_identity),
    ]:
        authority = Authority()  # a fresh authority per client: hit counts are per client
        results[name] = bench(authority, authority.api("calc-api").default_scope)
    base = results["ccflow TokenClient.get_token"]
    width = max(map(len, results))
    print(f"cache hit cost per call (best of {ROUNDS} rounds, fake transports, same run)")
    for name, us in results.items():
        print(f"  {name:<{width}}  {us:8.3f} us   {us / base:7.1f}x TokenClient")
    verdict = "meets" if base <= 1.0 else "MISSES"
    print(f"TokenClient sync hit: {base:.3f} us ({verdict} the 1 us target)")


if __name__ == "__main__":
    main()
