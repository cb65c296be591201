"""Requests per second through nginx with and without the gate, on a repeated token, side by
side, and the gate's own decision rate; wrk drives each for a few seconds.

    python bench/gate.py [--seconds 5] [--connections 32]

nginx runs examples/gate/nginx.conf (the gated server) next to the same server without
auth_request; the upstream is nginx itself (``return 200``), so the numbers show the gate's
cost, not an app's. Goal: gated at least 0.7 of nginx alone on loopback (reported, not
enforced: a shared machine's numbers vary).
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from ccflow import TokenValidator
from ccflow.authority import Authority
from ccflow.gate import Gate, Rules

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wrk(url: str, token: str, seconds: int, connections: int) -> float:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or not shutil.which("wrk"):
        print("needs nginx and wrk (apt-get install -y nginx wrk)")
        return 2
    authority = Authority()
    api = authority.api("calc-api")
    validator = TokenValidator(
        tenant_id=authority.tenant_id,
        authority_host=authority.host,
        audience=[api.client_id],
        http_client=httpx.AsyncClient(transport=authority.transport()),
    )
    gate_port, api_port, front, plain = free_port(), free_port(), free_port(), free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Gate(Rules.from_mapping({"default": {"roles": ["invokeRole"]}}), validator=validator),
            port=gate_port,
            log_level="warning",
            access_log=False,
        )
    )
    threading.Thread(target=server.run, daemon=True).start()
    conf = (ROOT / "examples/gate/nginx.conf").read_text()
    conf = conf.replace("127.0.0.1:9000", f"127.0.0.1:{gate_port}")
    conf = conf.replace("127.0.0.1:8080", f"127.0.0.1:{api_port}")
    conf = conf.replace("listen 127.0.0.1:8000", f"listen 127.0.0.1:{front}")
    extra = (
        f"    server {{ listen 127.0.0.1:{api_port}; location / {{ return 200 'ok'; }} }}\n"
        f"    server {{ listen 127.0.0.1:{plain}; location / {{ proxy_http_version 1.1; "
        f'proxy_set_header Connection ""; proxy_pass http://api; }} }}\n}}\n'
    )
    conf = conf[: conf.rstrip().rfind("}")] + extra
    with tempfile.TemporaryDirectory() as prefix:
        Path(prefix, "logs").mkdir()
        Path(prefix, "nginx.conf").write_text(conf)
        nginx = subprocess.Popen(
            [
                shutil.which("nginx") or "/usr/sbin/nginx",
                "-p",
                prefix,
                "-c",
                f"{prefix}/nginx.conf",
                "-e",
                f"{prefix}/logs/error.log",
                "-g",
                f"daemon off; pid {prefix}/nginx.pid;",
            ]
        )
        try:
            while not server.started:
                time.sleep(0.05)
            time.sleep(0.5)
            token = authority.mint()
            assert (
                httpx.get(
                    f"http://127.0.0.1:{front}/x", headers={"Authorization": f"Bearer {token}"}
                ).status_code
                == 200
            )
            alone = wrk(f"http://127.0.0.1:{plain}/x", token, args.seconds, args.connections)
            gated = wrk(f"http://127.0.0.1:{front}/x", token, args.seconds, args.connections)
            gate = wrk(f"http://127.0.0.1:{gate_port}/x", token, args.seconds, args.connections)
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
            server.should_exit = True
    print(f"nginx alone        {alone:10.0f} req/s")
    print(
        f"nginx + gate       {gated:10.0f} req/s  ({gated / alone:.2f} of nginx alone; goal 0.70)"
    )
    print(f"gate's decisions   {gate:10.0f} req/s  (uvicorn, one process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
