"""The ``ccflow`` subcommands ``token``, ``decode``, ``verify``, ``demo``, ``authority serve``
and ``gate``.

Each module exposes ``add_parser(subparsers)``, which registers the command through
:func:`ccflow._cli._common.add_command`, and ``run(args) -> int``; ``ccflow.cli`` calls
each ``add_parser``. Exit codes are shared (see :mod:`ccflow._cli._common`), and no traceback
ever reaches the user: every :class:`~ccflow.errors.CCFlowError` becomes a message on stderr.
"""
