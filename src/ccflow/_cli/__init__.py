"""The ``ccflow`` subcommands ``token``, ``decode``, ``verify``, ``demo``, ``authority serve``
and ``gate``.

Each module exposes ``add_parser(subparsers)`` and ``run(args) -> int``; ``ccflow.cli``
registers them. Exit codes are shared (see :mod:`ccflow._cli._common`), and no traceback
ever reaches the user: every :class:`~ccflow.errors.CCFlowError` becomes a message on stderr.
"""
