"""The local authority as a real server: in a thread, and as `ccflow authority serve`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from ccflow.authority import AuthorityServer, Fault, Registrations
from ccflow.cli import main


def client_for(server: AuthorityServer, **kwargs: Any) -> httpx.Client:
    assert server.ca_file is not None
    return httpx.Client(verify=ssl.create_default_context(cafile=str(server.ca_file)), **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[AuthorityServer]:
    with AuthorityServer(tls=True) as running:
        yield running


@pytest.fixture(autouse=True)
def _no_faults(server: AuthorityServer) -> Iterator[None]:
    yield
    server.authority.clear_fault()


def token_form(server: AuthorityServer) -> dict[str, str]:
    client = server.authority.client("calc-client")
    assert client.secret is not None
    return {
        "grant_type": "client_credentials",
        "client_id": client.client_id,
        "client_secret": client.secret,
        "scope": server.authority.api("calc-api").default_scope,
    }


def test_tls_server_on_loopback_free_port(server: AuthorityServer) -> None:
    assert server.url == f"https://127.0.0.1:{server.port}"
    assert server.port > 0
    assert server.authority.issuer.startswith(server.url)


def test_tls_token_verifies_against_served_jwks(server: AuthorityServer) -> None:
    with client_for(server) as http:
        token = http.post(server.authority.token_endpoint, data=token_form(server)).json()
        discovery = http.get(server.authority.discovery_url).json()
        jwks = jwt.PyJWKSet.from_dict(http.get(discovery["jwks_uri"]).json())
    key = jwks[jwt.get_unverified_header(token["access_token"])["kid"]]
    claims = jwt.decode(
        token["access_token"],
        key.key,
        algorithms=["RS256"],
        audience=server.authority.api("calc-api").client_id,
        issuer=discovery["issuer"],
    )
    assert claims["roles"] == ["invokeRole"]


def test_error_answers_cross_the_wire_in_azure_ad_shape(server: AuthorityServer) -> None:
    with client_for(server) as http:
        response = http.post(
            server.authority.token_endpoint, data={**token_form(server), "client_secret": "wrong"}
        )
    assert response.status_code == 401
    assert response.json()["error_codes"] == [7000215]


def test_untrusted_client_cannot_connect(server: AuthorityServer) -> None:
    with (
        httpx.Client(verify=ssl.create_default_context()) as http,
        pytest.raises(httpx.ConnectError),
    ):
        http.get(server.authority.discovery_url)


def test_fault_status_on_the_wire(server: AuthorityServer) -> None:
    server.authority.set_fault("token", Fault(status=503, retry_after="2", times=1))
    with client_for(server) as http:
        first = http.post(server.authority.token_endpoint, data=token_form(server))
        second = http.post(server.authority.token_endpoint, data=token_form(server))
    assert (first.status_code, first.headers["retry-after"]) == (503, "2")
    assert second.status_code == 200


def test_fault_body_on_the_wire(server: AuthorityServer) -> None:
    server.authority.set_fault("jwks", Fault(status=200, body=b"<html>oops</html>"))
    with client_for(server) as http:
        response = http.get(server.authority.jwks_uri)
    assert response.content == b"<html>oops</html>"


def test_fault_drop_closes_the_connection(server: AuthorityServer) -> None:
    server.authority.set_fault("token", Fault(drop=True))
    with client_for(server) as http, pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.post(server.authority.token_endpoint, data=token_form(server))


@pytest.mark.parametrize("fault", [Fault(delay=3), Fault(timeout=True)])
def test_slow_answer_times_a_client_out(server: AuthorityServer, fault: Fault) -> None:
    server.authority.set_fault("discovery", fault)
    with client_for(server, timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
        http.get(server.authority.discovery_url)


def test_delay_then_answers(server: AuthorityServer) -> None:
    server.authority.set_fault("discovery", Fault(delay=0.05, times=1))
    with client_for(server) as http:
        assert http.get(server.authority.discovery_url).status_code == 200


def test_garbage_requests_get_4xx_not_500(server: AuthorityServer) -> None:
    with client_for(server) as http:
        responses = [
            http.post(server.authority.token_endpoint, content=b"\x00\xff" * 100),
            http.post(
                server.authority.token_endpoint,
                data=token_form(server),
                headers={"Authorization": "Basic %%%"},
            ),
            http.post(server.authority.token_endpoint, json={"grant_type": "client_credentials"}),
            http.request("DELETE", server.authority.jwks_uri),
            http.get(f"{server.url}/../../etc/passwd"),
        ]
    assert all(400 <= r.status_code < 500 for r in responses), [r.status_code for r in responses]


def test_plain_http_server_and_stop_closes_idle_keep_alive() -> None:
    server = AuthorityServer().start()
    http = httpx.Client()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.ca_file is None
        assert http.get(server.authority.discovery_url).status_code == 200
    finally:
        server.stop()
    with pytest.raises(httpx.TransportError):
        http.get(server.authority.discovery_url)
    http.close()


def test_info_lists_addresses_and_registrations(server: AuthorityServer) -> None:
    info = server.info()
    assert info["ca_file"] == str(server.ca_file)
    assert info["clients"][0] == {
        "name": "calc-client",
        "client_id": server.authority.client("calc-client").client_id,
        "secret": server.authority.client("calc-client").secret,
        "roles": ["invokeRole"],
        "tenant_id": server.authority.tenant_id,
    }
    assert info["tenants"] == [
        {
            "tenant_id": server.authority.tenant_id,
            "issuer": server.authority.issuer,
            "token_endpoint": server.authority.token_endpoint,
            "jwks_uri": server.authority.jwks_uri,
        }
    ]


def test_info_lists_every_tenant_and_each_clients_home(tmp_path: Path) -> None:
    # A multi-tenant set-up printed only the first tenant: its partner tenant's token endpoint
    # and which client lives where were nowhere in the output.
    with AuthorityServer(Registrations.multi_tenant()) as multi:
        info = multi.info()
        authority = multi.authority
        assert [t["tenant_id"] for t in info["tenants"]] == list(authority.tenant_ids)
        assert len(info["tenants"]) == 2
        partner = info["tenants"][1]
        assert partner["token_endpoint"] == authority.token_endpoint_for(partner["tenant_id"])
        assert partner["issuer"] == authority.issuer_for(partner["tenant_id"])
        homes = {c["name"]: c["tenant_id"] for c in info["clients"]}
        assert set(homes.values()) == set(authority.tenant_ids)


# -- the command -------------------------------------------------------------------------------

JSON_KEYS = {
    "issuer",
    "authority_host",
    "tenant_id",
    "token_endpoint",
    "jwks_uri",
    "ca_file",
    "tenants",
    "apis",
    "clients",
}


def start_cli(*args: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccflow", "authority", "serve", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: the server prints once listening, or exits
    if not line:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        pytest.fail(f"server did not start: {err}")
    return proc, json.loads(line)


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    proc, info = start_cli("--tls", "--port", "0")
    try:
        yield proc, info
    finally:
        # SIGTERM, so the server removes its TLS files; SIGKILL only if it does not stop.
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=5)


def test_cli_json_first_line(served: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    _, info = served
    assert set(info) == JSON_KEYS
    assert info["authority_host"].startswith("https://127.0.0.1:")
    assert info["issuer"] == f"{info['authority_host']}/{info['tenant_id']}/v2.0"
    assert Path(info["ca_file"]).is_file()
    assert info["apis"] == [
        {
            "name": "calc-api",
            "client_id": info["apis"][0]["client_id"],
            "identifier_uri": info["apis"][0]["identifier_uri"],
            "roles": ["invokeRole"],
        }
    ]
    assert [(c["name"], c["roles"]) for c in info["clients"]] == [
        ("calc-client", ["invokeRole"]),
        ("reader-client", []),
    ]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_exits_0_on_signal_despite_idle_keep_alive(
    served: tuple[subprocess.Popen[str], dict[str, Any]], sig: signal.Signals
) -> None:
    proc, info = served
    ctx = ssl.create_default_context(cafile=info["ca_file"])
    with httpx.Client(verify=ctx) as http:
        assert http.get(info["jwks_uri"]).status_code == 200  # connection now idle, kept alive
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0


def test_cli_removes_its_tls_files_on_exit(
    served: tuple[subprocess.Popen[str], dict[str, Any]],
) -> None:
    proc, info = served
    tls_dir = Path(info["ca_file"]).parent
    assert (tls_dir / "server-key.pem").is_file()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert not tls_dir.exists()


# A signal that lands while the server is still generating its TLS files (its private key
# among them): here, deterministically, from inside the TLS file writer.
# Loading the certificate and key into the server's TLS context follows writing them.
_SIGNAL_DURING_STARTUP = """
import os, signal, ssl, sys
from ccflow.cli import main

load = ssl.SSLContext.load_cert_chain

def load_then_signal(self, *args, **kwargs):
    load(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)

ssl.SSLContext.load_cert_chain = load_then_signal
sys.exit(main(["authority", "serve", "--port", "0", "--json", "--tls"]))
"""


def test_cli_signal_during_startup_exits_0_and_leaves_no_tls_files(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", _SIGNAL_DURING_STARTUP],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_server_removes_the_tls_files_it_wrote_but_not_a_given_directory(
    tmp_path: Path,
) -> None:
    with AuthorityServer(tls=True) as own:
        assert own.ca_file is not None
        own_dir = own.ca_file.parent
    assert not own_dir.exists()
    with AuthorityServer(tls=True, tls_dir=tmp_path) as given:
        assert given.ca_file == tmp_path / "ca.pem"
    assert (tmp_path / "ca.pem").is_file()


def test_cli_serves_tokens(served: tuple[subprocess.Popen[str], dict[str, Any]]) -> None:
    _, info = served
    client = info["clients"][0]
    with httpx.Client(verify=ssl.create_default_context(cafile=info["ca_file"])) as http:
        response = http.post(
            info["token_endpoint"],
            data={
                "grant_type": "client_credentials",
                "client_id": client["client_id"],
                "client_secret": client["secret"],
                "scope": info["apis"][0]["identifier_uri"] + "/.default",
            },
        )
    assert response.status_code == 200


def test_cli_config_file(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        'tenant_id = "t-1"\n[apis.a]\nclient_id = "a1"\nroles = ["r"]\n'
        '[clients.c]\nclient_id = "c1"\nsecret = "s"\nroles = { a = ["r"] }\n'
    )
    proc, info = start_cli("--config", str(config))
    try:
        assert info["tenant_id"] == "t-1"
        assert info["ca_file"] is None
        assert info["authority_host"].startswith("http://127.0.0.1:")
        client = {"name": "c", "client_id": "c1", "secret": "s", "roles": ["r"], "tenant_id": "t-1"}
        assert info["clients"] == [client]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        proc.communicate(timeout=5)


def test_cli_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_text("= nope")
    assert main(["authority", "serve", "--config", str(tmp_path / "bad.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_cli_config_not_utf8_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    assert main(["authority", "serve", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert "UTF-8" in err
    assert "Traceback" not in err


def test_cli_serve_never_shows_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(AuthorityServer, "__init__", broken)
    assert main(["authority", "serve"]) == 1
    assert capsys.readouterr().err == "ccflow: error: unexpected RuntimeError: unforeseen\n"


def test_cli_bad_port_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["authority", "serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


def test_cli_requires_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["authority"])
    assert exc.value.code == 2


def human_output(*args: str) -> str:
    """What ``ccflow authority serve`` prints for people, up to "Ctrl-C"; it then exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ccflow", "authority", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if not line or "Ctrl-C" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=5)
    assert proc.returncode == 0
    return "".join(lines) + out


def test_cli_human_output_hides_secrets() -> None:
    text = human_output()
    assert "calc-client" in text
    assert "ccflow~calc-client" not in text
    # Roles read as words, not a Python list.
    assert "roles invokeRole" in text
    assert "roles (none)" in text
    assert "['" not in text


def test_plain_http_off_loopback_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["authority", "serve", "--host", "0.0.0.0"]) == 2
    assert "loopback" in capsys.readouterr().err


def _raw_exchange(server: AuthorityServer, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("target", "header", "status"),
    [
        # A header value in latin-1 (http.server decodes it so) dropped the connection unanswered.
        ("/{t}/v2.0/.well-known/openid-configuration", b"X-Caller: caf\xe9", b"200"),
        ("/{t}/v2.0/.well-known/openid-configuration", b"client-request-id: \xff", b"200"),
        # The absolute form (RFC 9112 3.2.2), which a server must accept, did the same.
        ("{url}/{t}/v2.0/.well-known/openid-configuration", b"X-Caller: x", b"200"),
        ("*", b"X-Caller: x", b"400"),
    ],
)
def test_odd_request_heads_are_answered_not_dropped(
    target: str, header: bytes, status: bytes
) -> None:
    with AuthorityServer() as server:
        path = target.format(url=server.url, t=server.authority.tenant_id).encode()
        answer = _raw_exchange(
            server,
            b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n"
            b"Connection: close\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]


@pytest.mark.parametrize(
    ("length", "status", "says"),
    [
        # A well-formed length past the limit was answered "400 bad Content-Length".
        (str((1 << 20) + 1), b"413", b"1048576 bytes"),
        ("-5", b"400", b"Content-Length"),
        ("nope", b"400", b"Content-Length"),
    ],
)
def test_a_body_too_large_is_413_and_a_bad_length_400(
    length: str, status: bytes, says: bytes
) -> None:
    with AuthorityServer() as server:
        path = f"/{server.authority.tenant_id}/oauth2/v2.0/token".encode()
        answer = _raw_exchange(
            server,
            b"POST "
            + path
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
            + length.encode()
            + b"\r\nConnection: close\r\n\r\n",
        )
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert says in answer


def test_the_server_key_is_created_private_not_made_private_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key was written with the umask's mode (world-readable in a given tls_dir) and only
    # then chmod-ed to 0600: another user could read it in between. With chmod taken away,
    # what remains is the mode it was created with.
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    old = os.umask(0o022)
    try:
        AuthorityServer(tls=True, tls_dir=tmp_path).stop()  # a given directory is kept
    finally:
        os.umask(old)
    key_file = tmp_path / "server-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_an_existing_key_file_is_made_private_before_it_is_written(tmp_path: Path) -> None:
    (tmp_path / "server-key.pem").write_bytes(b"old")
    (tmp_path / "server-key.pem").chmod(0o644)
    AuthorityServer(tls=True, tls_dir=tmp_path).stop()
    key_file = tmp_path / "server-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


MULTI_TENANT_TOML = """
tenant_id = "11111111-2222-4333-8444-555555555555"
tenants = ["66666666-7777-4888-8999-000000000000"]

[apis.orders-api]
client_id = "aaaaaaaa-0000-4000-8000-000000000001"
roles = ["Orders.Read"]
multi_tenant = true

[clients.shop]
client_id = "cccccccc-0000-4000-8000-000000000001"
secret = "shop-secret"
roles = { orders-api = ["Orders.Read"] }

[clients.partner-shop]
client_id = "cccccccc-0000-4000-8000-000000000002"
secret = "partner-secret"
roles = { orders-api = ["Orders.Read"] }
tenant_id = "66666666-7777-4888-8999-000000000000"
"""


def test_human_output_names_the_other_tenants_and_where_clients_live(tmp_path: Path) -> None:
    config = tmp_path / "registrations.toml"
    config.write_text(MULTI_TENANT_TOML)
    text = human_output("--config", str(config))
    host = text.splitlines()[0].removeprefix("ccflow local authority at ")
    partner = "66666666-7777-4888-8999-000000000000"
    endpoint = f"{host}/{partner}/oauth2/v2.0/token"
    assert f"tenant  {partner}  token_endpoint {endpoint}" in text
    away = next(x for x in text.splitlines() if "cccccccc-0000-4000-8000-000000000002" in x)
    assert away.endswith(f"tenant {partner}")
    home = next(x for x in text.splitlines() if "cccccccc-0000-4000-8000-000000000001" in x)
    assert "tenant" not in home
    assert "secret" not in text.lower().replace("secrets are printed", "")


def test_stop_closes_a_connection_stalled_before_the_tls_handshake() -> None:
    # The handshake ran before the connection was tracked, so stop() left a client that had
    # connected but not yet said hello hanging (the server held it for the 60 s idle timeout).
    server = AuthorityServer(tls=True).start()
    try:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    except BaseException:
        server.stop()
        raise
    with client:
        deadline = time.monotonic() + 5
        while not server.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        server.stop()
        client.settimeout(3)
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault(timeout=True, delay=0.2), 200), (Fault(timeout=True, delay=0.2, status=503), 503)],
)
def test_a_timeout_fault_on_the_server_answers_late_as_documented(
    fault: Fault, status: int
) -> None:
    # Documented as "answer only after delay seconds", it closed the connection instead, so a
    # client patient enough got a RemoteProtocolError rather than the (late) answer.
    with AuthorityServer() as server, httpx.Client(timeout=5) as http:
        server.authority.set_fault("discovery", fault)
        started = time.monotonic()
        answer = http.get(server.authority.discovery_url)
        assert time.monotonic() - started >= 0.2
        assert answer.status_code == status
        if status == 200:
            assert answer.json()["issuer"] == server.authority.issuer


@pytest.mark.parametrize("coding", ["chunked", "Chunked", "gzip, chunked", "chunked "])
def test_any_transfer_encoding_is_refused_and_never_read_as_a_second_request(
    coding: str,
) -> None:
    # Only the exact value "chunked" was refused: with "gzip, chunked" the body was taken as
    # empty (a 400 about grant_type) and the chunks were then parsed as a second request.
    with AuthorityServer() as server:
        tenant = server.authority.tenant_id
        request = (
            f"POST /{tenant}/oauth2/v2.0/token HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"Transfer-Encoding: {coding}\r\n\r\n"
            "1d\r\ngrant_type=client_credentials\r\n0\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            raw.sendall(request)
            received = b""
            while chunk := raw.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 411 ")
    assert received.count(b"HTTP/1.") == 1


TIMEOUT = 10.0


def test_a_slow_answer_in_flight_when_the_server_stops_is_not_sent() -> None:
    from ccflow import AuthorityUnreachableError, TokenClient
    from ccflow.authority import AuthorityServer

    server = AuthorityServer().start()
    try:
        authority = server.authority
        app = authority.client("calc-client")
        authority.set_fault("token", Fault(delay=20))
        outcome: list[object] = []

        def call() -> None:
            with TokenClient(
                client_id=app.client_id,
                client_secret=app.secret,
                token_endpoint=authority.token_endpoint,
                max_retries=0,
                timeout=30,
            ) as tc:
                try:
                    outcome.append(tc.get_token(authority.api("calc-api").default_scope))
                except AuthorityUnreachableError as exc:
                    outcome.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        for _ in range(500):
            if authority.hits["token"]:
                break
            threading.Event().wait(0.01)
        assert authority.hits["token"] == 1
    finally:
        server.stop()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    # The server is gone: the held-back answer must not arrive after all, early.
    assert len(outcome) == 1
    assert isinstance(outcome[0], AuthorityUnreachableError), outcome
