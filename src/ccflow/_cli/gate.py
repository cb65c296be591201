"""``ccflow gate``: the forward-auth endpoint for nginx, Traefik and Envoy, served by uvicorn."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ccflow._cli._common import EXIT_USAGE, guarded
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
    gate.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ROLE",
        help="a role every path no --rules route covers needs (repeat for any of several)",
    )
    gate.add_argument("--rules", metavar="FILE", help="routes by path prefix and method (TOML)")
    gate.add_argument(
        "--upstream-header",
        action="append",
        default=[],
        metavar="NAME=CLAIM",
        help="also answer with header NAME carrying the token's CLAIM (repeatable)",
    )
    gate.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    gate.add_argument("--port", type=int, default=9000, help="port to bind (default 9000)")
    gate.set_defaults(func=run)
    return gate


@guarded
def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn's handling); 2 on bad configuration."""
    from ccflow.gate import Gate, gate_rules, parse_upstream_headers
    from ccflow.validation import TokenValidator

    try:
        if not 0 <= args.port <= 65535:
            raise ConfigurationError(f"--port must be 0..65535, got {args.port}", setting="port")
        rules = gate_rules(args.role, args.rules)
        extra = parse_upstream_headers(args.upstream_header)
        validator = TokenValidator.from_env()
    except ConfigurationError as exc:
        print(f"ccflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        import uvicorn
    except ImportError:
        print(
            "ccflow: error: the gate needs uvicorn: pip install 'ccflow-oauth[server]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    app = Gate(rules, validator=validator, upstream_headers=extra)
    print(f"ccflow gate on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
