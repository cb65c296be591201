"""The calc API under uvicorn, with and without ``RequireRole``, driven by ``wrk`` on loopback.

Two uvicorn servers (one process each, on free 127.0.0.1 ports) serve ``GET
/calc/v1/add/2/3``: the calc API (``examples.calc_api``: RequireRole + TokenValidator on an
in-process local authority) and the same route and handler code without authentication (the
in-process bench's "bare Starlette"). ``wrk`` (Debian's package; a C load generator, so the
client is not the bottleneck) sends the same valid token to both, in interleaved runs; the
ratio of requests per second is taken per pair of runs and the median reported.

Guard (issue 13): the protected app at least 0.90 of the unprotected one. Any non-2xx answer
fails the bench. Both servers are stopped before it exits::

    .venv/bin/python bench/uvicorn_wrk.py                   # 5 pairs of 3 s runs
    .venv/bin/python bench/uvicorn_wrk.py --runs 9 --seconds 5 --connections 32
    .venv/bin/python bench/uvicorn_wrk.py --floor           # the digest floor in its place

``--floor`` serves the in-process bench's digest floor (one SHA-256 of the Authorization
header and one dict lookup in front of the same route) in place of the calc API: what the
least a verified-token cache can cost weighs under a server.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]
PATH = "/calc/v1/add/2/3"


def serve(variant: str, port: int, token_file: Path) -> None:
    """The child process: build the app, write the token wrk should send, run uvicorn."""
    import httpx
    import uvicorn

    sys.path.insert(0, str(ROOT))
    from examples.calc_api.app import create_app
    from middleware import bare_app

    from ccflow import TokenValidator
    from ccflow.authority import Authority

    authority = Authority()
    api = authority.api("calc-api")
    token = authority.mint()
    lifespan: Literal["on", "off"] = "on"
    if variant == "floor":
        from middleware import floor_app

        app, lifespan = floor_app(token), "off"  # a bare ASGI middleware: no lifespan
    elif variant == "protected":
        validator = TokenValidator(
            tenant_id=authority.tenant_id,
            authority_host=authority.host,
            audience=[api.client_id, api.identifier_uri],
            allowed_clients=[authority.client("calc-client").client_id],
            http_client=httpx.AsyncClient(transport=authority.transport()),
        )
        app = create_app(validator)
    else:
        app = bare_app()
    token_file.write_text(token)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan=lifespan
    )
    uvicorn.Server(config).run()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(variant: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    """Start one server; wait (at most 30 s) until it answers; return it, its port, the token."""
    port, token_file = free_port(), workdir / f"{variant}.token"
    command = [sys.executable, __file__, "--serve", variant, "--port", str(port)]
    process = subprocess.Popen([*command, "--token-file", str(token_file)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the {variant} server exited with {process.returncode}")
        if token_file.exists() and token_file.read_text():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return process, port, token_file.read_text()
            except OSError:
                pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the {variant} server did not start within 30 s")


def wrk(port: int, token: str, seconds: int, connections: int) -> float:
    """Requests per second of one wrk run; any non-2xx answer or socket error stops the bench."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    command += ["-H", f"Authorization: Bearer {token}", f"http://127.0.0.1:{port}{PATH}"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw failed requests:\n{out}")
    found = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if found is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="pairs of runs (default 5)")
    parser.add_argument("--seconds", type=int, default=3, help="seconds per run (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections")
    parser.add_argument("--floor", action="store_true", help="the digest floor, not the calc API")
    parser.add_argument(
        "--serve", choices=["protected", "floor", "unprotected"], help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--token-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.token_file)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as workdir:
        guarded = "floor" if args.floor else "protected"
        servers = {"protected": start(guarded, Path(workdir))}
        servers["unprotected"] = start("unprotected", Path(workdir))
        try:
            ratios, rates = run_pairs(servers, args)
        finally:
            for process, _, _ in servers.values():
                process.terminate()
                process.wait(timeout=10)
    print(f"{args.runs} interleaved pairs of {args.seconds} s wrk runs, {args.connections} conns")
    for name, values in rates.items():
        print(f"{name:<12} req/s median {statistics.median(values):>9,.0f}  runs {values}")
    median = statistics.median(ratios)
    verdict = "pass" if median >= 0.90 else "MISSED"
    if args.floor:
        print(f"with/without the digest floor: median {median:.2f} (no guard)")
    else:
        print(f"with/without RequireRole: median {median:.2f} (guard >= 0.90: {verdict})")
    print(f"per pair: {', '.join(f'{r:.2f}' for r in ratios)}")


def run_pairs(
    servers: dict[str, tuple[subprocess.Popen[bytes], int, str]], args: argparse.Namespace
) -> tuple[list[float], dict[str, list[float]]]:
    """A warm-up, then ``args.runs`` pairs of runs, the order alternating within pairs."""
    for _, port, token in servers.values():
        wrk(port, token, 1, args.connections)
    rates: dict[str, list[float]] = {name: [] for name in servers}
    ratios = []
    for n in range(args.runs):
        order = ["protected", "unprotected"] if n % 2 == 0 else ["unprotected", "protected"]
        pair = {}
        for name in order:
            _, port, token = servers[name]
            pair[name] = wrk(port, token, args.seconds, args.connections)
            rates[name].append(round(pair[name]))
        ratios.append(pair["protected"] / pair["unprotected"])
    return ratios, rates


if __name__ == "__main__":
    main()
