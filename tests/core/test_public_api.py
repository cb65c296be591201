"""The public API is exactly ``ccflow.__all__``: every public name is listed, documented, real."""

from __future__ import annotations

import types

import ccflow


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(ccflow).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public.discard("annotations")
    lazy = {"RequireRole"}  # imported on first use
    assert sorted(ccflow.__all__) == sorted(public | lazy | {"__version__"})


def test_the_caller_side_imports_no_asgi_framework() -> None:
    import subprocess
    import sys

    code = "import sys, ccflow; ccflow.TokenClient; print('starlette' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    code = "import ccflow; print(ccflow.RequireRole.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ccflow.starlette"


def test_every_public_name_is_documented() -> None:
    for name in ccflow.__all__:
        if name == "__version__":
            continue
        obj = getattr(ccflow, name)
        assert obj.__doc__, f"ccflow.{name} has no docstring"


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("ccflow").joinpath("py.typed").is_file()
