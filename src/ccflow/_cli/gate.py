"""``ccflow gate``: the forward-auth endpoint for nginx, Traefik and Envoy, served by uvicorn."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any

from ccflow._cli._common import EXIT_USAGE, add_repeatable_argument, error, guarded
from ccflow.errors import ConfigurationError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``gate`` on the ``ccflow`` subparsers."""
    gate: argparse.ArgumentParser = subparsers.add_parser(
        "gate",
        help="answer nginx auth_request / Traefik ForwardAuth / Envoy ext_authz sub-requests",
        description=(
            "Serve the forward-auth gate: 200 with X-Ccflow-Client-Id, X-Ccflow-Tenant-Id and "
            "X-Ccflow-Roles for an allowed request, the RFC 6750 refusal otherwise. The "
            "validator is configured from the CCFLOW_* environment, as RequireRole's is."
        ),
    )
    add_repeatable_argument(
        gate,
        "--role",
        metavar="ROLE",
        help="a role every path no --rules route covers needs (repeat for any of several)",
    )
    gate.add_argument("--rules", metavar="FILE", help="routes by path prefix and method (TOML)")
    add_repeatable_argument(
        gate,
        "--upstream-header",
        metavar="NAME=CLAIM",
        help="also answer with header NAME carrying the token's CLAIM (repeatable)",
    )
    gate.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    gate.add_argument("--port", type=int, default=9000, help="port to bind (default 9000)")
    gate.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="uvicorn worker processes (default 1); each has its own validator and caches",
    )
    gate.set_defaults(func=run)
    return gate


@guarded
def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn's handling); 2 on bad configuration.

    The flags become the ``CCFLOW_GATE_*`` variables of ``ccflow.gate.from_env``, which
    uvicorn calls in each worker: one way to build the gate, however many workers.
    """
    from ccflow.gate import from_env
    from ccflow.validation import TokenValidator

    try:
        environ = _gate_environment(args)
        from_env({**os.environ, **environ})  # the rules and headers, checked now
        asyncio.run(TokenValidator.from_env().aclose())  # the CCFLOW_* variables, checked now
        _check_address(args.host, args.port)
    except ConfigurationError as exc:
        error(str(exc))
        return EXIT_USAGE
    try:
        import uvicorn
    except ImportError:
        error("the gate needs uvicorn: pip install 'ccflow-oauth[gate]'")
        return EXIT_USAGE
    os.environ.update(environ)
    print(f"ccflow gate on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(
        "ccflow.gate:from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
    return 0


def _check_address(host: str, port: int) -> None:
    """Refuse an address the gate cannot listen on (busy port, unknown host) as bad
    configuration, as ``authority serve`` does, before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(f"cannot listen on {host}:{port}: {reason}") from None


def _gate_environment(args: argparse.Namespace) -> dict[str, str]:
    """The ``CCFLOW_GATE_*`` variables the flags stand for (each set, so that none is taken
    from the caller's environment), or ``ConfigurationError`` for a bad flag."""
    if not 0 <= args.port <= 65535:
        raise ConfigurationError(f"--port must be 0..65535, got {args.port}", setting="port")
    if args.workers < 1:
        raise ConfigurationError(f"--workers must be 1 or more, got {args.workers}")
    for flag, values in (("--role", args.role), ("--upstream-header", args.upstream_header)):
        if any("," in value for value in values):
            raise ConfigurationError(f"{flag} values cannot hold a comma", setting=flag[2:])
    return {
        "CCFLOW_GATE_ROLES": ",".join(args.role),
        "CCFLOW_GATE_RULES": os.path.abspath(args.rules) if args.rules else "",
        "CCFLOW_GATE_UPSTREAM_HEADERS": ",".join(args.upstream_header),
    }
