"""End to end through a real nginx running examples/gate/nginx.conf: the bad-request suite
gets RequireRole's statuses, and the upstream never sees a refused request nor a client's own
X-Ccflow-* headers. Without nginx: a skip here, a failure in CI (CI=true)."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.support import (
    FACE_CASES,
    NOW,
    ON_BAD_REQUESTS,
    Builder,
    Minter,
    authorization,
    calc_validator,
    challenge_ok,
    face_challenge_ok,
    face_token,
)

from ccflow.authority import Authority
from ccflow.gate import Gate, Rules
from ccflow.testing import TokenFactory

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gate" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)

if NGINX is None:
    if os.environ.get("CI") == "true":
        pytest.fail("nginx is required in CI (.ci/run installs it)", pytrace=False)
    pytest.skip("nginx is not installed (apt-get install nginx)", allow_module_level=True)


def bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Stack:
    def __init__(self, base: str, authority: Authority, upstream: list[dict[str, str]]) -> None:
        self.base, self.authority, self.upstream = base, authority, upstream


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    authority = Authority(clock=lambda: float(NOW))
    rules = Rules.from_mapping(
        {
            "default": {"roles": ["invokeRole"]},
            "route": [
                {"path": "/public", "public": True},
                {"path": "/who", "roles": ["invokeRole"], "scopes": ["Calc.Read"]},
            ],
        }
    )
    gate_sock, api_sock, front_sock = bound(), bound(), bound()
    front_port = front_sock.getsockname()[1]
    front_sock.close()  # nginx binds it itself
    server = uvicorn.Server(
        uvicorn.Config(Gate(rules, validator=calc_validator(authority)), log_level="warning")
    )
    gate_thread = threading.Thread(target=server.run, kwargs={"sockets": [gate_sock]}, daemon=True)
    gate_thread.start()
    seen: list[dict[str, str]] = []
    handler = type("Handler", (Recorder,), {"seen": seen})
    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler, bind_and_activate=False)
    api.socket.close()
    api.socket = api_sock
    api.server_address = api_sock.getsockname()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
    conf = SAMPLE.read_text()
    conf = conf.replace("127.0.0.1:9000", f"127.0.0.1:{gate_sock.getsockname()[1]}")
    conf = conf.replace("127.0.0.1:8080", f"127.0.0.1:{api_sock.getsockname()[1]}")
    conf = conf.replace("listen 127.0.0.1:8000", f"listen 127.0.0.1:{front_port}")
    (prefix / "nginx.conf").write_text(conf)
    directives = f"daemon off; master_process off; pid {prefix}/nginx.pid;"
    assert NGINX is not None
    nginx = subprocess.Popen(
        [
            NGINX,
            "-p",
            str(prefix),
            "-c",
            str(prefix / "nginx.conf"),
            "-e",
            str(prefix / "logs/error.log"),
            "-g",
            directives,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{front_port}"
    deadline = time.monotonic() + 10
    while not server.started or not _listening(front_port):
        assert nginx.poll() is None, (prefix / "logs/error.log").read_text()
        assert time.monotonic() < deadline, "nginx or the gate did not start"
        time.sleep(0.05)
    try:
        yield Stack(base, authority, seen)
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        server.should_exit = True
        gate_thread.join(timeout=10)
        api.shutdown()
        api.server_close()
        gate_sock.close()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@ON_BAD_REQUESTS
def test_bad_request_through_nginx_gets_require_roles_answer(
    stack: Stack, builder: Builder, status: int, error: str | None, fragment: str
) -> None:
    value = builder(Minter(stack.authority, TokenFactory(stack.authority)))
    before = len(stack.upstream)
    response = httpx.get(f"{stack.base}/calc/v1/add/2/3", headers=authorization(value))
    assert response.status_code == status
    assert len(stack.upstream) == before  # the upstream never saw it
    if isinstance(value, list):
        return  # repeated Authorization headers: nginx answers 400 itself, without the gate
    realm = stack.authority.api("calc-api").client_id
    assert challenge_ok(realm, response.headers.get("www-authenticate"), error, fragment), (
        response.headers
    )
    assert response.json()["error"] == (error or "unauthorized")
    assert len(stack.upstream) == before  # the upstream never saw it


@pytest.mark.parametrize(("case", "status", "challenge"), FACE_CASES)
def test_every_face_answers_the_same_through_nginx(
    stack: Stack, case: str, status: int, challenge: str | None
) -> None:
    raw = face_token(case, TokenFactory(stack.authority))
    before = len(stack.upstream)
    headers = {"Authorization": f"Bearer {raw}"} if raw else {}
    response = httpx.get(f"{stack.base}/who", headers=headers)
    assert response.status_code == status
    assert face_challenge_ok(case, response.headers.get("www-authenticate"), challenge)
    assert len(stack.upstream) == before + (status == 200)


def test_allowed_request_reaches_the_upstream_with_the_gates_identity(stack: Stack) -> None:
    token = stack.authority.mint(now=NOW)
    response = httpx.get(
        f"{stack.base}/calc/v1/add/2/3?x=1",
        headers={
            "Authorization": f"Bearer {token}",
            "X-Ccflow-Client-Id": "spoofed",
            "X-Ccflow-Scopes": "Admin",
        },
    )
    assert response.status_code == 200
    received = stack.upstream[-1]
    assert received["path"] == "/calc/v1/add/2/3?x=1"
    assert received["x-ccflow-client-id"] == stack.authority.client("calc-client").client_id
    assert received["x-ccflow-roles"] == "invokeRole"
    assert "x-ccflow-scopes" not in received  # the client's own, dropped


def test_public_route_passes_without_identity_even_if_the_client_sends_some(stack: Stack) -> None:
    response = httpx.get(f"{stack.base}/public/info", headers={"X-Ccflow-Client-Id": "spoofed"})
    assert response.status_code == 200
    assert "x-ccflow-client-id" not in stack.upstream[-1]


@pytest.mark.parametrize(
    "path", ["/public/../calc/v1/add/2/3", "/public/%2e%2e/calc", "/public%2f..%2fcalc"]
)
def test_a_public_prefix_cannot_be_climbed_out_of(stack: Stack, path: str) -> None:
    before = len(stack.upstream)
    response = httpx.get(stack.base + path)
    assert response.status_code in (400, 401)
    assert len(stack.upstream) == before


def test_a_client_cannot_choose_the_path_the_gate_judges(stack: Stack) -> None:
    before = len(stack.upstream)
    response = httpx.get(
        f"{stack.base}/calc/v1/add/2/3",
        headers={"X-Original-URI": "/public/x", "X-Forwarded-Uri": "/public/x"},
    )
    assert response.status_code == 401
    assert len(stack.upstream) == before


def raw_status(base: str, target: str, header: str = "") -> int:
    """The status for a request line sent as is (httpx would normalise the target)."""
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("target", "header"),
    [
        ("/calc/../public/x", ""),  # nginx passes the raw target: /calc/... to the upstream
        ("/calc/%2e%2e/public", ""),
        ("/public/..;/calc", ""),  # /calc to Tomcat
        ("/%70ublic/x", ""),  # not /public to an upstream routing on the raw path
        ("/public#/../calc", ""),
        ("/PUBLIC/x", ""),  # /public to a case-insensitive upstream, but not to the gate
        ("/public/x", "X-HTTP-Method-Override: DELETE\r\n"),
    ],
)
def test_a_path_the_upstream_could_read_otherwise_never_reaches_it(
    stack: Stack, target: str, header: str
) -> None:
    before = len(stack.upstream)
    assert raw_status(stack.base, target, header) == 400
    assert len(stack.upstream) == before
