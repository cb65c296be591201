"""The public API is exactly ``ccflow.__all__``: every public name is listed, documented, real."""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
import tomllib
import types
from pathlib import Path

import griffe
import pytest

import ccflow


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(ccflow).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    public.discard("annotations")
    lazy = {"RequireRole", "RequireScope"}  # imported on first use
    assert sorted(ccflow.__all__) == sorted(public | lazy | {"__version__"})


def test_the_caller_side_imports_no_asgi_framework() -> None:
    import subprocess
    import sys

    # A fresh interpreter: this process has long imported Starlette for other tests.
    code = """
import sys
from ccflow import AsyncTokenClient, BearerAuth, TokenClient
from ccflow.httpx_auth import AsyncBearerAuth
client = TokenClient(client_id="c", client_secret="s", tenant_id="t")
auth = client.auth("api://calc-api/.default")
assert isinstance(auth, BearerAuth)
AsyncTokenClient(client_id="c", client_secret="s", tenant_id="t").auth("api://calc-api")
frameworks = {"starlette", "fastapi", "uvicorn", "ccflow.starlette", "ccflow.fastapi"}
print(sorted(m for m in sys.modules if m in frameworks or m.split(".")[0] in frameworks))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    code = "import ccflow; print(ccflow.RequireRole.__module__, ccflow.RequireScope.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ccflow.starlette", "ccflow.starlette"]


def test_every_public_name_is_documented() -> None:
    for name in ccflow.__all__:
        if name == "__version__":
            continue
        obj = getattr(ccflow, name)
        assert obj.__doc__, f"ccflow.{name} has no docstring"


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("ccflow").joinpath("py.typed").is_file()


ROOT = Path(__file__).resolve().parents[2]
# `pip install` and what follows on the line (up to the end of an inline code span).
_PIP_INSTALL = re.compile(r"pip install([^`\n]*)")
# An extra of a distribution named plain `ccflow`: `ccflow[fastapi]`, not `ccflow-oauth[...]`.
_WRONG_EXTRA = re.compile(r"(?<![\w.-])ccflow\[")


def _user_facing_files() -> list[Path]:
    """Every file a user reads install advice in: src/, docs/, examples/ and the README."""
    files = [ROOT / "README.md"]
    for folder in ("src", "docs", "examples"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".toml"}]
    return files


def _install_hints_naming_plain_ccflow(text: str) -> list[str]:
    """The ``pip install`` commands (and extras) in ``text`` that name the other package."""
    wrong = []
    for match in _PIP_INSTALL.finditer(text):
        for word in match.group(1).split():
            name = word.strip("'\"").split("[", 1)[0].split("==", 1)[0].split(">=", 1)[0]
            if name.lower() == "ccflow":
                wrong.append(match.group(0))
    wrong += [m.group(0) for m in _WRONG_EXTRA.finditer(text)]
    return wrong


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("pip install ccflow", True),
        ("`pip install 'ccflow[fastapi]'`", True),
        ('pip install -U "ccflow[server]"', True),
        ("needs respx (ccflow[testing])", True),
        ("pip install ccflow-oauth", False),
        ("`pip install 'ccflow-oauth[testing]'`", False),
        ("pip install -e '.[dev]'", False),
        ("from ccflow import TokenClient; ccflow.testing", False),
    ],
)
def test_the_install_hint_check_tells_the_names_apart(text: str, wrong: bool) -> None:
    assert bool(_install_hints_naming_plain_ccflow(text)) is wrong


def test_no_file_tells_users_to_install_the_unrelated_ccflow_package() -> None:
    # `ccflow` on PyPI is an unrelated workflow library; ours is `ccflow-oauth`.
    found = {
        str(path.relative_to(ROOT)): hints
        for path in _user_facing_files()
        if (hints := _install_hints_naming_plain_ccflow(path.read_text(encoding="utf-8")))
    }
    assert found == {}


def test_the_distribution_is_ccflow_oauth_with_the_ccflow_command_and_plugin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "ccflow-oauth"
    assert project["scripts"] == {"ccflow": "ccflow.cli:main"}
    assert project["entry-points"]["pytest11"] == {"ccflow": "ccflow.pytest_plugin"}
    installed = importlib.metadata.distribution("ccflow-oauth")
    assert installed.version == ccflow.__version__
    assert {(e.group, e.name) for e in installed.entry_points} >= {
        ("console_scripts", "ccflow"),
        ("pytest11", "ccflow"),
    }


def test_the_readme_says_the_import_name_is_shared_with_another_package() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "pip install ccflow-oauth" in install
    assert "unrelated package on PyPI named `ccflow`" in install
    assert "don't install both" in install


PUBLIC_MODULES = [
    "ccflow",
    "ccflow.errors",
    "ccflow.client",
    "ccflow.credentials",
    "ccflow.httpx_auth",
    "ccflow.redis",
    "ccflow.validation",
    "ccflow.jwks",
    "ccflow.starlette",
    "ccflow.fastapi",
    "ccflow.wsgi",
    "ccflow.django",
    "ccflow.gate",
    "ccflow.testing",
    "ccflow.pytest_plugin",
    "ccflow.authority",
    "ccflow.cli",
]


def test_every_module_without_an_underscore_is_a_public_module() -> None:
    found = {
        f"ccflow.{module.name}"
        for module in pkgutil.iter_modules(ccflow.__path__)
        if not module.name.startswith("_")
    }
    assert found | {"ccflow"} == set(PUBLIC_MODULES)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_the_api_reference_documents_each_public_module(module: str) -> None:
    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert f"\n::: {module}\n" in reference
    assert importlib.import_module(module).__doc__


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    """The package as mkdocstrings reads it: statically, with griffe."""
    return griffe.load("ccflow", search_paths=[str(ROOT / "src")], allow_inspection=False)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_name_in_all_exists_and_has_a_docstring_the_reference_shows(
    module: str, package: griffe.Module
) -> None:
    # A constant's docstring is the string after it; a `#:` comment shows nothing.
    imported = importlib.import_module(module)
    missing = [name for name in imported.__all__ if not hasattr(imported, name)]
    assert missing == []
    static = package if module == "ccflow" else package[module.removeprefix("ccflow.")]
    assert sorted(map(str, static.exports or ())) == sorted(imported.__all__)
    undocumented = [name for name in imported.__all__ if not static.members[name].docstring]
    assert undocumented == []
