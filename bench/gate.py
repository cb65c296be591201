"""Requests per second through nginx with and without the gate, on a repeated token, side by
side, against two upstreams, and the gate's own decision rate; wrk drives each for a while.

    python bench/gate.py [--seconds 5] [--connections 32] [--http auto|h11|httptools]
                         [--workers 1] [--repeat 1]

nginx runs the server of examples/gate/nginx.conf (the gated one) next to the same server
without ``auth_request``, each in front of two upstreams:

- nginx itself (``return 200``): the harshest denominator, all of the time is the gate's;
- the calc API's route as a Starlette app under uvicorn (:data:`upstream`), with no auth of
  its own: the least an API written in Python costs.

The gate is the real thing: ``uvicorn --factory ccflow.gate:from_env`` in its own process(es),
validating against the local authority served on 127.0.0.1. Goal: gated at least 0.7 of
nginx alone on loopback (reported, not enforced: a shared machine's numbers vary).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ccflow.authority import AuthorityServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "gate" / "nginx.conf"


async def add(request: Request) -> JSONResponse:
    """The calc API's route, without auth of its own: the gate in front is the auth."""
    a, b = request.path_params["a"], request.path_params["b"]
    return JSONResponse({"result": a + b, "caller": request.headers.get("x-ccflow-client-id")})


upstream = Starlette(routes=[Route("/calc/v1/add/{a:int}/{b:int}", add)])
"""The Python upstream: a Starlette app, as small as an API gets."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(url: str, token: str, seconds: int, connections: int) -> float:
    header = f"Authorization: Bearer {token}"
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-H", header, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


@contextmanager
def process(args: list[str], env: dict[str, str], port: int) -> Iterator[None]:
    """A server process, until it answers on ``port``; terminated afterwards."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"{args[:4]} exited with {proc.returncode}"
            assert time.monotonic() < deadline, f"{args[:4]} did not start"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def uvicorn_args(app: str, port: int, http: str, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--port",
        str(port),
        "--http",
        http,
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def nginx_conf(gate: int, ports: dict[str, int]) -> str:
    """The sample's gated server, twice (one per upstream), each beside an ungated twin."""
    sample = SAMPLE.read_text().replace("127.0.0.1:9000", f"127.0.0.1:{gate}")
    head, _, rest = sample.partition("    server {")
    gated = "    server {" + rest[: rest.rstrip().rfind("}")]
    head = head.replace("upstream api         { server 127.0.0.1:8080; keepalive 32; }", "")
    servers = [
        f"    upstream static {{ server 127.0.0.1:{ports['static']}; keepalive 32; }}\n",
        f"    upstream python {{ server 127.0.0.1:{ports['python']}; keepalive 32; }}\n",
        f"    server {{ listen 127.0.0.1:{ports['static']}; location / {{ return 200 'ok'; }} }}\n",
    ]
    for name in ("static", "python"):
        front = gated.replace("listen 127.0.0.1:8000", f"listen 127.0.0.1:{ports['gated-' + name]}")
        servers.append(front.replace("proxy_pass http://api;", f"proxy_pass http://{name};"))
        servers.append(
            f"    server {{ listen 127.0.0.1:{ports['plain-' + name]}; location / {{ "
            f'proxy_http_version 1.1; proxy_set_header Connection ""; '
            f"proxy_pass http://{name}; }} }}\n"
        )
    return head + "".join(servers) + "}\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"])
    parser.add_argument("--workers", type=int, default=1, help="the gate's uvicorn workers")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the best of each is kept")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    if not nginx or not shutil.which("wrk"):
        print("needs nginx and wrk (apt-get install -y nginx wrk)")
        return 2
    names = ["gate", "static", "python", "gated-static", "plain-static", "gated-python"]
    ports = {name: free_port() for name in [*names, "plain-python"]}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as prefix:
        server = stack.enter_context(AuthorityServer())
        authority = server.authority
        env = {
            **os.environ,
            "CCFLOW_TENANT_ID": authority.tenant_id,
            "CCFLOW_AUDIENCE": authority.api("calc-api").client_id,
            "AZURE_AUTHORITY_HOST": server.url,
            "CCFLOW_GATE_ROLES": "invokeRole",
            "PYTHONPATH": str(ROOT / "bench"),
        }
        gate_args = uvicorn_args("ccflow.gate:from_env", ports["gate"], args.http, args.workers)
        stack.enter_context(process([*gate_args, "--factory"], env, ports["gate"]))
        # The upstream is always served at its best (httptools when installed): --http is
        # the gate's lever only.
        python_args = uvicorn_args("gate:upstream", ports["python"], "auto")
        stack.enter_context(process(python_args, env, ports["python"]))
        Path(prefix, "logs").mkdir()
        Path(prefix, "nginx.conf").write_text(nginx_conf(ports["gate"], ports))
        nginx_args = [nginx, "-p", prefix, "-c", f"{prefix}/nginx.conf"]
        nginx_args += [
            "-e",
            f"{prefix}/logs/error.log",
            "-g",
            f"daemon off; pid {prefix}/nginx.pid;",
        ]
        stack.enter_context(process(nginx_args, env, ports["gated-python"]))
        token = authority.mint()
        for name in ("gated-static", "gated-python"):
            url = f"http://127.0.0.1:{ports[name]}/calc/v1/add/1/1"
            assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
            assert httpx.get(url).status_code == 401
        rates: dict[str, float] = {}
        for _ in range(args.repeat):
            for name in ["plain-static", "gated-static", "plain-python", "gated-python", "gate"]:
                url = f"http://127.0.0.1:{ports[name]}/calc/v1/add/1/1"
                rate = wrk(url, token, args.seconds, args.connections)
                rates[name] = max(rate, rates.get(name, 0.0))
    report(rates, args)
    return 0


def report(rates: dict[str, float], args: argparse.Namespace) -> None:
    print(f"gate: uvicorn --http {args.http}, {args.workers} worker(s); wrk -c{args.connections}")
    for upstream_name, label in (
        ("static", "nginx return 200"),
        ("python", "Starlette app under uvicorn"),
    ):
        alone, gated = rates[f"plain-{upstream_name}"], rates[f"gated-{upstream_name}"]
        print(f"upstream: {label}")
        print(f"  nginx alone        {alone:10.0f} req/s")
        print(
            f"  nginx + gate       {gated:10.0f} req/s  ({gated / alone:.2f} of alone; goal 0.70)"
        )
    print(f"gate's decisions     {rates['gate']:10.0f} req/s  (the gate asked directly)")


if __name__ == "__main__":
    sys.exit(main())
