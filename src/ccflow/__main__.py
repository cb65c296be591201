"""``python -m ccflow``: the ``ccflow`` command."""

from __future__ import annotations

from ccflow.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
