"""Every Python example in README.md, docs/*.md and examples/calc_api/README.md runs.

Each ```` ```python ```` block must be preceded (blank lines allowed) by a marker, an HTML
comment that neither GitHub nor mkdocs shows:

- ``<!-- docs-test: skip REASON -->``: a fragment or signature listing, or a block that needs
  Azure AD or files the reader has; the reason is required.
- ``<!-- docs-test: run [given=NAME,...] [check=NAME] -->``: executed here, in-process, against
  the local authority served on 127.0.0.1 and the calc API served with uvicorn on 127.0.0.1.
  ``given`` names objects put in the block's namespace (see ``_given``); ``check`` names an
  assertion run on what the block printed and defined (see ``_CHECKS``).

What a run block sees (the documented substitution; never the internet):

- the environment of a configured caller and API: ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID``,
  ``AZURE_CLIENT_SECRET`` (calc-client), ``AZURE_AUTHORITY_HOST`` (the local authority on
  127.0.0.1), ``CCFLOW_TENANT_ID``, ``CCFLOW_AUDIENCE`` (calc-api's client id and App ID URI),
  ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` (the local authority, whose IMDS endpoint hands out
  calc-client's tokens as the system-assigned managed identity);
- a local authority whose calc-api has the App ID URI ``api://calc-api``, the name the pages use;
- in the source, ``https://calc.example.com`` becomes the calc API's loopback URL, the
  placeholders ``<tenant id>``, ``<api client id>`` and ``<caller client id>`` the local
  authority's ids, and ``from myservice import`` ``from examples.calc_api.app import``.

Blocks with a top-level ``await`` run in a fresh event loop.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import served

from ccflow import TokenClient, TokenValidator
from ccflow.authority import AuthorityServer, Registrations

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "examples" / "calc_api" / "README.md",
]
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*docs-test:\s*((?:(?!-->).)*?)\s*-->\s*\Z", re.S)
ENV_CLEARED = (
    "CCFLOW_TOKEN_ENDPOINT",
    "CCFLOW_ISSUER",
    "CCFLOW_ALLOWED_CLIENTS",
    "CCFLOW_ALLOWED_TENANTS",
    "CCFLOW_ACCEPT_V1",
    "CCFLOW_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN",
    "AZURE_FEDERATED_TOKEN_FILE",
    "CCFLOW_MANAGED_IDENTITY",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int
    source: str
    marker: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def options(self) -> dict[str, str]:
        assert self.marker is not None
        assert self.marker.startswith("run")
        words = self.marker.split()[1:]
        return dict(word.partition("=")[::2] for word in words)


def _blocks() -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            before = MARKER.search(text[: match.start()].rstrip() + "\n")
            # The marker must be the last thing before the fence, not any earlier comment.
            marker = before.group(1) if before else None
            found.append(
                Block(
                    page=str(page.relative_to(ROOT)),
                    line=text.count("\n", 0, match.start()) + 1,
                    source=match.group(1),
                    marker=marker,
                )
            )
    return found


BLOCKS = _blocks()
RUN = [b for b in BLOCKS if b.marker is not None and b.marker.startswith("run")]
PYTEST_FILES = [b for b in RUN if b.options().get("check") == "pytest"]
EXECUTED = [b for b in RUN if b not in PYTEST_FILES]


# -- the local authority and the calc API on 127.0.0.1 ---------------------------------------


@dataclasses.dataclass
class Bed:
    server: AuthorityServer
    api_url: str

    @property
    def authority(self) -> Any:
        return self.server.authority

    @property
    def api_id(self) -> str:
        return str(self.authority.api("calc-api").client_id)

    @property
    def client_id(self) -> str:
        return str(self.authority.client("calc-client").client_id)


def _registrations() -> Registrations:
    regs = Registrations.default()
    apis = tuple(
        dataclasses.replace(api, identifier_uri="api://calc-api") if api.name == "calc-api" else api
        for api in regs.apis
    )
    return dataclasses.replace(regs, apis=apis)


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    from examples.calc_api.app import create_app

    with AuthorityServer(_registrations()) as server, pytest.MonkeyPatch.context() as mp:
        authority = server.authority
        api = authority.api("calc-api")
        mp.setenv("CCFLOW_TENANT_ID", authority.tenant_id)
        mp.setenv("CCFLOW_AUDIENCE", f"{api.client_id},{api.identifier_uri}")
        mp.setenv("AZURE_AUTHORITY_HOST", server.url)
        for name in ENV_CLEARED:
            mp.delenv(name, raising=False)
        # Configured from the environment, the app owns its validator and closes it on
        # lifespan shutdown, inside uvicorn's event loop.
        with served(create_app()) as api_url:
            yield Bed(server, api_url)


@pytest.fixture
def env(bed: Bed, monkeypatch: pytest.MonkeyPatch) -> None:
    authority = bed.authority
    client = authority.client("calc-client")
    api = authority.api("calc-api")
    for name in ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "AZURE_TENANT_ID": authority.tenant_id,
        "AZURE_CLIENT_ID": client.client_id,
        "AZURE_CLIENT_SECRET": client.secret,
        "AZURE_AUTHORITY_HOST": bed.server.url,
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": bed.server.url,
        "CCFLOW_TENANT_ID": authority.tenant_id,
        "CCFLOW_AUDIENCE": f"{api.client_id},{api.identifier_uri}",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(ROOT))


def _substituted(source: str, bed: Bed) -> str:
    for old, new in {
        "https://calc.example.com": bed.api_url,
        "<tenant id>": bed.authority.tenant_id,
        "<api client id>": bed.api_id,
        "<caller client id>": bed.client_id,
        "from myservice import": "from examples.calc_api.app import",
    }.items():
        source = source.replace(old, new)
    return source


@contextlib.contextmanager
def _given(names: list[str], bed: Bed) -> Iterator[dict[str, Any]]:
    from examples.calc_api.app import add
    from starlette.routing import Route

    with contextlib.ExitStack() as stack:
        values: dict[str, Any] = {}
        for name in names:
            if name == "routes":
                values[name] = [Route("/calc/v1/add/{a}/{b}", add, methods=["GET"])]
            elif name == "validator":
                values[name] = TokenValidator(
                    tenant_id=bed.authority.tenant_id,
                    authority_host=bed.server.url,
                    audience=bed.api_id,
                )
            elif name == "raw_token":
                values[name] = bed.authority.mint()
            elif name == "client":
                values[name] = stack.enter_context(
                    TokenClient(
                        client_id=bed.client_id,
                        client_secret=bed.authority.client("calc-client").secret,
                        tenant_id=bed.authority.tenant_id,
                        authority_host=bed.server.url,
                    )
                )
            else:
                raise AssertionError(f"unknown given name {name!r}")
        yield values


def _execute(block: Block, source: str, namespace: dict[str, Any]) -> str:
    code = compile(source, block.id, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = eval(code, namespace)  # our own pages' examples
        if result is not None:  # a coroutine: the block awaits at top level
            asyncio.run(result)
    return out.getvalue()


# -- checks on what a block printed and defined ---------------------------------------------


def _check_calc_answer(output: str, namespace: dict[str, Any], bed: Bed) -> None:
    """The block printed the calc API's answer to 1 + 1 (a dict), naming calc-client."""
    first = output.splitlines()[0]
    assert ast.literal_eval(first) == {"result": 2, "caller": bed.client_id}


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> Any:
    """Run the app's lifespan around the block (RequireRole closes its own validator then)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}

    async def send(message: dict[str, Any]) -> None:
        await outbox.put(message)

    task = asyncio.ensure_future(app(scope, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


def _check_asgi_app(output: str, namespace: dict[str, Any], bed: Bed) -> None:
    """The block's ``app`` answers 200 with the role, 403 without, 401 without a token."""
    app = namespace["app"]
    authority = bed.authority

    async def statuses() -> list[tuple[int, Any]]:
        transport = httpx.ASGITransport(app=app)
        answers = []
        async with (
            _lifespan(app),
            httpx.AsyncClient(transport=transport, base_url="http://api") as http,
        ):
            for token in (authority.mint(), authority.mint("reader-client"), None):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = await http.get("/calc/v1/add/1/1", headers=headers)
                answers.append((r.status_code, r.json() if r.status_code == 200 else None))
        # A FastAPI dependency's own validator is the application's to close.
        for value in namespace.values():
            validator = getattr(value, "validator", None)
            if isinstance(validator, TokenValidator):
                await validator.aclose()
        return answers

    assert asyncio.run(statuses()) == [
        (200, {"result": 2, "caller": bed.client_id}),
        (403, None),
        (401, None),
    ]


_CHECKS: dict[str, Callable[[str, dict[str, Any], Bed], None]] = {
    "calc-answer": _check_calc_answer,
    "asgi-app": _check_asgi_app,
}


# -- the tests ---------------------------------------------------------------------------------


def test_the_pages_have_python_examples() -> None:
    assert any(b.page == "README.md" for b in RUN)
    assert len(RUN) >= 10


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_every_python_block_is_marked(block: Block) -> None:
    assert block.marker is not None, f"{block.id}: add <!-- docs-test: run|skip REASON -->"
    kind, _, rest = block.marker.partition(" ")
    assert kind in ("run", "skip"), f"{block.id}: unknown marker {block.marker!r}"
    if kind == "skip":
        assert rest.strip(), f"{block.id}: a skip marker needs its reason"
    else:
        options = block.options()
        assert set(options) <= {"given", "check"}, f"{block.id}: {options}"
        assert options.get("check", "calc-answer") in {*_CHECKS, "pytest"}


@pytest.mark.parametrize("block", EXECUTED, ids=lambda b: b.id)
def test_example_runs(block: Block, bed: Bed, env: None) -> None:
    options = block.options()
    names = [n for n in options.get("given", "").split(",") if n]
    with _given(names, bed) as given:
        namespace: dict[str, Any] = {"__name__": "docs_example", **given}
        output = _execute(block, _substituted(block.source, bed), namespace)
    check = options.get("check")
    if check is not None:
        _CHECKS[check](output, namespace, bed)


def test_readme_caller_and_api_examples_are_checked() -> None:
    """The README's caller example prints the calc answer; its API example serves 200/403/401."""
    readme = [b for b in RUN if b.page == "README.md"]
    assert [b.options().get("check") for b in readme] == ["calc-answer", "asgi-app"]
    caller, api = (b.source.strip().splitlines() for b in readme)
    assert len(caller) <= 10
    assert len(api) <= 6


@pytest.mark.parametrize("block", PYTEST_FILES, ids=lambda b: b.id)
def test_example_test_file_passes(block: Block, bed: Bed, env: None, pytester: Any) -> None:
    """A page's example test file passes in a fresh pytest run with ccflow's plugin."""
    pytester.makepyfile(test_example=_substituted(block.source, bed))
    result = pytester.runpytest_inprocess("-W", "error")
    result.assert_outcomes(passed=block.source.count("def test_"))


def _advice_rows() -> list[tuple[int, str]]:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    table = text.split("| code | the message begins |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        codes, begins = (cell.strip() for cell in line.strip("|").split("|"))
        for code in re.findall(r"AADSTS(\d+)", codes):
            rows.append((int(code), begins.strip("`")))
    return rows


@pytest.mark.parametrize(("code", "begins"), _advice_rows())
def test_errors_page_quotes_the_message_for_each_code(code: int, begins: str) -> None:
    """docs/errors.md shows the start of the message ccflow writes for each code."""
    import httpx

    from ccflow import TokenClient
    from ccflow.errors import TokenRequestError

    client_id, tenant = "11111111-2222-4333-8444-555555555555", "contoso.com"
    scope = "api://x/.default"
    refusal = {"error": "invalid_request", "error_codes": [code]}
    answer = httpx.MockTransport(lambda request: httpx.Response(400, json=refusal))
    client = TokenClient(
        client_id=client_id,
        client_secret="s",
        tenant_id=tenant,
        http_client=httpx.Client(transport=answer),
    )
    with client, pytest.raises(TokenRequestError) as info:
        client.get_token(scope)
    message = str(info.value)
    named = {"<id>": client_id, "<tenant>": tenant, "<scopes>": scope}
    for placeholder, value in named.items():
        begins = begins.replace(placeholder, value)
    for part in begins.split("..."):
        assert part.strip(" :") in message, (code, part)
    assert message.startswith(begins.split("...")[0].rstrip(" :"))


def test_errors_page_advice_table_is_there() -> None:
    assert {code for code, _ in _advice_rows()} == {7000215, 700016, 500011, 1002012, 70011, 90002}


def test_configuration_page_lists_every_variable_the_code_reads() -> None:
    pattern = re.compile(r"[\"'](?:AZURE|CCFLOW|SSL|CALC)_[A-Z0-9_]+[\"']")
    read = {
        match.group(0).strip("\"'")
        for folder in ("src", "examples")
        for path in (ROOT / folder).rglob("*.py")
        for match in pattern.finditer(path.read_text(encoding="utf-8"))
    }
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", page, re.M))
    assert "AZURE_CLIENT_SECRET" in read
    assert read - listed == set()
    assert listed - read == set()
