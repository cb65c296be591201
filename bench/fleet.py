"""A fleet on a cold cache: how many token POSTs, how long until every caller holds a token.

16 processes x 4 threads ask for one token at the same moment, against ccflow's local
authority served over HTTP on loopback (it counts token requests), with ccflow + Redis,
ccflow without a shared cache, and msal. Then: the cost of a cache hit with Redis configured
and without, POSTs for 16 processes over three token lifetimes (refreshing), and a shell loop
of ``ccflow token`` calls. Needs ``redis-server`` on PATH (started here, no persistence)::

    .venv/bin/python bench/fleet.py                 # about a minute and a half
    .venv/bin/python bench/fleet.py --cli-calls 20  # a shorter CLI loop
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import msal
import requests

import redis
from ccflow import TokenClient
from ccflow.authority import AuthorityServer
from ccflow.redis import RedisTokenCache

PROCESSES = 16
THREADS = 4
LIFETIME = 6  # seconds: the short-lived tokens of the refresh run
MARGIN = 1.0  # refresh this long before expiry: a token serves about LIFETIME - MARGIN


def settings(server: AuthorityServer) -> dict[str, str]:
    """What a worker needs to know: where to ask, as whom, for what."""
    authority = server.authority
    app = authority.client("calc-client")
    return {
        "url": server.url,
        "tenant": authority.tenant_id,
        "client_id": app.client_id,
        "secret": app.secret,
        "scope": authority.api("calc-api").default_scope,
        "ca_file": str(server.ca_file),
    }


def token_client(conf: dict[str, str], **options: Any) -> TokenClient:
    """A ccflow client of calc-client, trusting the local authority's CA."""
    return TokenClient(
        client_id=conf["client_id"],
        client_secret=conf["secret"],
        tenant_id=conf["tenant"],
        authority_host=conf["url"],
        http_client=httpx.Client(verify=ssl.create_default_context(cafile=conf["ca_file"])),
        **options,
    )


def make_caller(kind: str, conf: dict[str, str]) -> Callable[[], str]:
    """One process's token source: ccflow with or without Redis, or msal."""
    if kind == "msal":
        session = requests.Session()
        session.verify = conf["ca_file"]
        session.trust_env = False  # REQUESTS_CA_BUNDLE would win over verify
        app = msal.ConfidentialClientApplication(
            conf["client_id"],
            client_credential=conf["secret"],
            authority=f"{conf['url']}/{conf['tenant']}",
            instance_discovery=False,
            http_client=session,
        )

        def msal_token() -> str:
            result = app.acquire_token_for_client([conf["scope"]])
            return str(result["access_token"])

        return msal_token
    options: dict[str, Any] = {"refresh_margin": MARGIN}
    if kind == "redis":
        options["cache"] = RedisTokenCache(conf["redis"])
    client = token_client(conf, **options)
    return lambda: client.get_token(conf["scope"]).token


def worker(kind: str, conf: dict[str, str], ready: Any, go: Any, out: Any, seconds: float) -> None:
    """One process: THREADS callers wait for ``go``, then ask (for ``seconds``, or once)."""
    caller = make_caller(kind, conf)
    held: list[float] = []
    seen: set[str] = set()

    def run() -> None:
        go.wait()
        seen.add(caller())
        held.append(time.time())
        end = time.time() + seconds
        while time.time() < end:
            seen.add(caller())
            time.sleep(0.05)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    ready.release()
    for thread in threads:
        thread.join()
    out.put((max(held), len(seen)))


def fleet(kind: str, conf: dict[str, str], server: AuthorityServer, seconds: float = 0.0) -> Any:
    """Run PROCESSES workers of ``kind`` on a cold cache: (POSTs, seconds until all hold one)."""
    if "redis" in conf:
        redis.Redis.from_url(conf["redis"]).flushall()
    server.authority.hits.clear()
    context = multiprocessing.get_context("spawn")
    ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(target=worker, args=(kind, conf, ready, go, out, seconds))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()  # every process imported, built its client and started its threads
    started = time.time()
    go.set()
    results = [out.get(timeout=120) for _ in processes]
    for process in processes:
        process.join()
    return server.authority.hits["token"], max(r[0] for r in results) - started


def hit_cost_us(conf: dict[str, str], with_redis: bool, n: int = 200_000) -> float:
    """Microseconds per cache hit (best of 5), after one fetch."""
    options: dict[str, Any] = {}
    if with_redis:
        options["cache"] = RedisTokenCache(conf["redis"])
    client = token_client(conf, **options)
    client.get_token(conf["scope"])
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            client.get_token(conf["scope"])
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def cli_loop(conf: dict[str, str], server: AuthorityServer, calls: int) -> int:
    """POSTs made by ``calls`` runs of ``ccflow token`` in a row, on a fresh cache file."""
    server.authority.hits.clear()
    with tempfile.TemporaryDirectory() as cache_home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "CCFLOW_"))}
        env.update(
            XDG_CACHE_HOME=cache_home,
            AZURE_CLIENT_ID=conf["client_id"],
            AZURE_TENANT_ID=conf["tenant"],
            AZURE_AUTHORITY_HOST=conf["url"],
            AZURE_CLIENT_SECRET=conf["secret"],
        )
        command = [sys.executable, "-m", "ccflow", "token", "--scope", conf["scope"]]
        command += ["--ca-file", conf["ca_file"]]
        for _ in range(calls):
            subprocess.run(command, env=env, check=True, capture_output=True)
    return server.authority.hits["token"]


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server on a free loopback port, no persistence."""
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("bench/fleet.py needs redis-server on PATH (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url)
    for _ in range(500):
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cli-calls", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        redis_process, url = start_redis(directory)
        try:
            with (
                AuthorityServer(tls=True, token_lifetime=LIFETIME) as short,
                AuthorityServer(tls=True) as server,
            ):
                run(settings(server) | {"redis": url}, server, settings(short), short, args)
        finally:
            redis_process.kill()
            redis_process.wait()


def run(
    conf: dict[str, str],
    server: AuthorityServer,
    short_conf: dict[str, str],
    short: AuthorityServer,
    args: argparse.Namespace,
) -> None:
    """Every measurement, printed as it is made."""
    print(f"{PROCESSES} processes x {THREADS} threads, cold cache, one scope")
    print(f"{'':28} {'token POSTs':>12} {'all hold a token':>18}")
    for label, kind in (
        ("ccflow + Redis", "redis"),
        ("ccflow, no shared cache", "memory"),
        ("msal", "msal"),
    ):
        posts, seconds = fleet(kind, conf, server)
        print(f"{label:28} {posts:>12} {seconds * 1000:>15.0f} ms")
    print()
    with_redis, without = hit_cost_us(conf, True), hit_cost_us(conf, False)
    print(f"cache hit: {with_redis:.2f} us with Redis configured, {without:.2f} us without")
    print()
    seconds = 2.5 * (LIFETIME - MARGIN)  # three tokens: the first and two refreshes
    short_conf = short_conf | {"redis": url_of(conf)}
    print(f"{PROCESSES} processes asking every 50 ms for {seconds:.1f} s, {LIFETIME} s tokens")
    print("refreshed 1 s before expiry (three token lifetimes: target 3 POSTs)")
    for label, kind in (("ccflow + Redis", "redis"), ("ccflow, no shared cache", "memory")):
        posts, _ = fleet(kind, short_conf, short, seconds=seconds)
        print(f"{label:28} {posts:>12} POSTs")
    print()
    if args.cli_calls:
        posts = cli_loop(conf, server, args.cli_calls)
        print(f"{args.cli_calls} x `ccflow token` in a shell loop: {posts} POST(s)")


def url_of(conf: dict[str, str]) -> str:
    """The Redis URL in ``conf``."""
    return conf["redis"]


if __name__ == "__main__":
    main()
