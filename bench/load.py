"""Load: the calc API under uvicorn on 127.0.0.1, driven by a bounded async httpx load.

A mix of valid, expired, wrong-audience, garbage, role-less and missing tokens, each expected
to get its documented status; then the same number of requests to the same route without
``RequireRole`` as the baseline, in the same run. Prints counts per kind and status, latency
percentiles and requests per second for both, and their ratio. Exits 1 if any request got a
status other than the expected one or any 5xx, 0 otherwise. Starts and stops its own server
(in a thread, on a free port) and leaves nothing running::

    python bench/load.py                                  # 20,000 requests, concurrency 64
    python bench/load.py --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.calc_api.app import create_app

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.testing import TokenFactory

PATH = "/calc/v1/add/2/3"
# kind -> expected status; the cycle below sets the mix (valid is 1/2 of the traffic).
EXPECTED = {
    "valid": 200,
    "expired": 401,
    "wrong-audience": 401,
    "garbage": 401,
    "no-role": 403,
    "no-token": 401,
}
MIX = ["valid", "expired", "valid", "wrong-audience", "valid", "garbage", "valid", "no-role"]
MIX += ["valid", "no-token"]
DISTINCT_VALID = 16  # a handful of callers, each reusing its token as real clients do


@dataclass
class Run:
    """One load run: what each request got, and how long it took."""

    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[tuple[str, int]] = field(default_factory=Counter)
    wrong: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values()) + sum(self.errors.values())

    @property
    def server_errors(self) -> int:
        return sum(n for (_, status), n in self.outcomes.items() if status >= 500)

    @property
    def ok(self) -> bool:
        return not self.wrong and not self.errors and self.server_errors == 0

    @property
    def rps(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        data = sorted(self.latencies)
        if not data:
            return 0.0
        return data[min(len(data) - 1, round(p / 100 * (len(data) - 1)))] * 1000.0


class Server:
    """uvicorn in a background thread, on a socket bound here (127.0.0.1, free port)."""

    def __init__(self, app: Starlette) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", backlog=2048
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("uvicorn did not stop")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def baseline_app() -> Starlette:
    """The same route without any authentication."""

    async def add(request: Request) -> JSONResponse:
        a, b = int(request.path_params["a"]), int(request.path_params["b"])
        return JSONResponse({"result": a + b, "caller": None})

    return Starlette(routes=[Route("/calc/v1/add/{a}/{b}", add, methods=["GET"])])


def headers_by_kind(authority: Authority) -> dict[str, list[dict[str, str]]]:
    tokens = TokenFactory(authority)
    bearer = [
        {"Authorization": f"Bearer {authority.mint(claims={'uti': f'load-{i}'})}"}
        for i in range(DISTINCT_VALID)
    ]
    return {
        "valid": bearer,
        "expired": [{"Authorization": f"Bearer {tokens.expired()}"}],
        "wrong-audience": [{"Authorization": f"Bearer {tokens.wrong_audience()}"}],
        "garbage": [{"Authorization": "Bearer eyJhbGciOi.not-a.token"}],
        "no-role": [{"Authorization": f"Bearer {tokens.no_roles()}"}],
        "no-token": [{}],
    }


async def drive(
    url: str, run: Run, requests: int, concurrency: int, kinds: dict[str, list[dict[str, str]]]
) -> None:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    next_index = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests:
            i = next_index
            next_index += 1
            kind = MIX[i % len(MIX)]
            choices = kinds[kind]
            headers = choices[i % len(choices)]
            started = time.perf_counter()
            try:
                response = await http.get(PATH, headers=headers)
            except httpx.HTTPError as exc:
                run.errors[type(exc).__name__] += 1
                continue
            run.latencies.append(time.perf_counter() - started)
            run.outcomes[(kind, response.status_code)] += 1
            if response.status_code != EXPECTED[kind]:
                run.wrong[(kind, response.status_code)] += 1

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        run.seconds = time.perf_counter() - started


def measure(
    app: Starlette,
    name: str,
    requests: int,
    concurrency: int,
    kinds: dict[str, list[dict[str, str]]],
) -> Run:
    run = Run(name)
    with Server(app) as server:
        asyncio.run(drive(server.url, run, requests, concurrency, kinds))
    return run


def report(run: Run) -> None:
    print(f"\n{run.name}: {run.total} requests in {run.seconds:.2f} s = {run.rps:,.0f} req/s")
    p50, p90, p99, top = (run.percentile(p) for p in (50, 90, 99, 100))
    print(f"  latency ms: p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  max {top:.2f}")

    for (kind, status), n in sorted(run.outcomes.items()):
        # The baseline has no auth: it answers 200 to every kind, by design.
        expected = None if run.name.startswith("baseline") else EXPECTED.get(kind)
        mark = "" if expected is None or status == expected else f"  WRONG (expected {expected})"
        print(f"  {kind:<15} {status}  {n:>7}{mark}")
    for name, n in sorted(run.errors.items()):
        print(f"  transport error {name}: {n}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load and its baseline; 0 when every request got the right status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight")
    args = parser.parse_args(argv)
    # Server and load share one process; the default 5 ms GIL hand-off would dominate latency.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        return _main(args, parser)
    finally:
        sys.setswitchinterval(switch)


def _main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.requests < 1 or args.concurrency < 1:
        parser.error("--requests and --concurrency must be at least 1")
    authority = Authority()
    api = authority.api("calc-api")
    validator = TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id, api.identifier_uri],
        allowed_clients=[
            authority.client("calc-client").client_id,
            authority.client("reader-client").client_id,
        ],
        http_client=httpx.AsyncClient(transport=authority.transport()),
    )
    kinds = headers_by_kind(authority)
    print(
        f"calc API under uvicorn on 127.0.0.1: {args.requests} requests per run at concurrency "
        f"{args.concurrency}; mix {dict(Counter(MIX))} (per {len(MIX)})"
    )
    app = create_app(validator)
    with_auth = measure(app, "with RequireRole", args.requests, args.concurrency, kinds)
    without = measure(
        baseline_app(),
        "baseline (same route, no auth)",
        args.requests,
        args.concurrency,
        {k: [{}] for k in kinds},
    )
    # The baseline answers 200 to everything: only transport errors and 5xx count there.
    without.wrong.clear()
    report(with_auth)
    report(without)
    if without.rps:
        print(
            f"\nthroughput with auth / without: {with_auth.rps / without.rps:.2f}; "
            f"p50 latency ratio {with_auth.percentile(50) / max(without.percentile(50), 1e-9):.2f}"
        )
    print(
        f"JWKS fetches: {authority.hits['jwks']}, discovery fetches: {authority.hits['discovery']}"
    )
    ok = with_auth.ok and without.server_errors == 0 and not without.errors
    ok = ok and with_auth.total == args.requests and without.total == args.requests
    print("VERDICT: " + ("PASS, every request got its documented status, no 5xx" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
