"""``ccflow authority serve``: the local authority as a real server, until interrupted."""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import threading
from types import FrameType
from typing import Any

from ccflow._cli._common import (
    EXIT_USAGE,
    add_command,
    add_repeatable_argument,
    error,
    guarded,
    require_scheme,
    warn,
)
from ccflow.authority import AuthorityServer, Registrations
from ccflow.errors import ConfigurationError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``authority serve`` on the ``ccflow`` subparsers."""
    authority: argparse.ArgumentParser = subparsers.add_parser(
        "authority",
        help="run ccflow's local Azure-AD-shaped authority",
        description="ccflow's local token issuer, shaped like Azure AD v2.",
    )
    commands = authority.add_subparsers(dest="authority_command", metavar="COMMAND")
    commands.required = True
    serve = add_command(
        commands,
        "serve",
        run,
        help="serve discovery, JWKS and the token endpoint on 127.0.0.1 until interrupted",
        description=(
            "Serve the local authority (discovery, JWKS, /oauth2/v2.0/token) until SIGINT or "
            "SIGTERM. Without --config it has the built-in registrations: calc-api (role "
            "invokeRole), calc-client (granted invokeRole) and reader-client (no roles). "
            "Its secrets and keys are public test values: bound beyond loopback, it says so."
        ),
        epilog="exit codes: 0 stopped by SIGINT or SIGTERM, 2 bad configuration or address",
        formatter_class=argparse.HelpFormatter,
    )
    serve.add_argument("--config", metavar="FILE", help="app registrations (TOML)")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 for every interface, in a container)",
    )
    serve.add_argument("--port", type=int, default=0, help="port to bind (default 0: a free port)")
    serve.add_argument(
        "--tls",
        action="store_true",
        help="serve HTTPS with a generated local CA (its file is reported as ca_file)",
    )
    serve.add_argument(
        "--public-url",
        metavar="URL",
        help="the address clients use, port included (https://authority:8443 behind"
        " docker-compose): the issuer and every endpoint it advertises use it",
    )
    add_repeatable_argument(
        serve,
        "--san",
        metavar="NAME",
        help="with --tls: one more host name or IP address in the certificate (the"
        " --public-url host is added by itself); repeat for several",
    )
    serve.add_argument(
        "--json",
        action="store_true",
        help="print one JSON line (addresses, registrations, secrets) once serving",
    )
    return authority


@guarded
def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; exit 0 then, 2 on bad configuration."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        """Ask the serving loop to stop."""
        stop.set()

    # Before the server exists: with --tls it writes a private key into a temporary directory,
    # which a signal arriving during start-up must not leave behind.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _serve(args, stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_FLAGS = {"public_url": "--public-url", "san": "--san", "host": "--host"}


def _server(args: argparse.Namespace) -> AuthorityServer:
    """The server the flags describe, bound but not started."""
    registrations = Registrations.from_toml(args.config) if args.config else None
    if not 0 <= args.port <= 65535:
        raise ConfigurationError(f"--port must be 0..65535, got {args.port}", setting="port")
    if args.public_url is not None:
        require_scheme(args.public_url, "--public-url")
    if args.san and not args.tls:
        warn("--san is ignored without --tls: there is no certificate to put names in")
    try:
        return AuthorityServer(
            registrations,
            host=args.host,
            port=args.port,
            tls=args.tls,
            public_url=args.public_url,
            san=args.san if args.tls else (),
        )
    except ConfigurationError as exc:
        flag = _FLAGS.get(exc.setting or "")
        if flag is None or str(exc).startswith(flag):
            raise
        message = str(exc)
        if message.startswith(exc.setting or ""):
            message = flag + message[len(exc.setting or "") :]
        else:
            message = f"{flag}: {message}"
        if flag == "--host":
            message += " Serve it with --tls (and --public-url https://NAME:PORT, --san NAME)."
        raise ConfigurationError(message, setting=flag) from None


def _beyond_loopback(host: str) -> bool:
    """True unless ``host`` is a loopback address (or ``localhost``)."""
    if host.strip().lower() == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return True  # a host name: whatever it resolves to, it is not known to be loopback


def _serve(args: argparse.Namespace, stop: threading.Event) -> int:
    """Start the server, print where it is, and serve until ``stop`` is set."""
    try:
        server = _server(args)
    except ConfigurationError as exc:
        error(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        error(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")
        return EXIT_USAGE
    if _beyond_loopback(args.host):
        warn(
            f"listening on {args.host}, beyond this machine: the client secrets and signing keys"
            " of the local authority are public test values, so anyone who can reach it can"
            " mint tokens it signs; never trust it outside a test setup"
        )
    try:
        server.start()
        info = server.info()
        if args.json:
            print(json.dumps(info), flush=True)
        else:
            _print_human(info)
        # A bounded wait in a loop, so the signal handler gets to run promptly everywhere.
        while not stop.wait(0.2):
            pass
    finally:
        server.stop()
    return 0


def _print_human(info: dict[str, Any]) -> None:
    """The server's addresses and registrations for people; secrets only with ``--json``."""
    lines = [
        f"ccflow local authority at {info['authority_host']}",
        f"  tenant_id       {info['tenant_id']}",
        f"  issuer          {info['issuer']}",
        f"  token_endpoint  {info['token_endpoint']}",
        f"  jwks_uri        {info['jwks_uri']}",
    ]
    if info["ca_file"]:
        lines.append(f"  ca_file         {info['ca_file']}")
    for tenant in info["tenants"][1:]:
        lines.append(f"  tenant  {tenant['tenant_id']}  token_endpoint {tenant['token_endpoint']}")
    for api in info["apis"]:
        lines.append(
            f"  api     {api['name']:<14} client_id {api['client_id']}  "
            f"scope {api['identifier_uri']}/.default  roles {_listed(api['roles'])}"
        )
    for client in info["clients"]:
        home = "" if client["tenant_id"] == info["tenant_id"] else f"  tenant {client['tenant_id']}"
        lines.append(
            f"  client  {client['name']:<14} client_id {client['client_id']}  "
            f"roles {_listed(client['roles'])}{home}"
        )
    lines.append("Secrets are printed with --json. Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


def _listed(roles: list[str]) -> str:
    """Roles for people: ``invokeRole, adminRole``, or ``(none)``."""
    return ", ".join(roles) or "(none)"
