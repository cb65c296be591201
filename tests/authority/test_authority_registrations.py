"""App registrations loaded from TOML."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ccflow.authority import Authority, Registrations
from ccflow.errors import ConfigurationError
from ccflow.testing import client_certificate

TOML = """
tenant_id = "11111111-2222-4333-8444-555555555555"

[apis.orders-api]
client_id = "aaaaaaaa-0000-4000-8000-000000000001"
identifier_uri = "api://orders"
roles = ["Orders.Read", "Orders.Write"]

[apis.legacy]
client_id = "aaaaaaaa-0000-4000-8000-000000000002"
access_token_version = 1

[clients.shop]
client_id = "bbbbbbbb-0000-4000-8000-000000000001"
secret = "shop-secret"
certificates = ["shop.pem"]
roles = { orders-api = ["Orders.Read"] }
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "shop.pem").write_bytes(client_certificate().certificate_pem)
    path = tmp_path / "authority.toml"
    path.write_text(TOML)
    return path


def test_toml_registrations(config: Path) -> None:
    regs = Registrations.from_toml(config)
    assert regs.tenant_id == "11111111-2222-4333-8444-555555555555"
    orders = regs.api("orders-api")
    assert (orders.identifier_uri, orders.roles) == (
        "api://orders",
        ("Orders.Read", "Orders.Write"),
    )
    legacy = regs.api("legacy")
    assert legacy.identifier_uri == f"api://{legacy.client_id}"
    assert legacy.access_token_version == 1
    shop = regs.client("shop")
    assert shop.secret == "shop-secret"
    assert shop.roles_for("orders-api") == ("Orders.Read",)
    assert shop.certificates[0].x5t_s256 == client_certificate().x5t_s256


def test_toml_registrations_issue_tokens(config: Path) -> None:
    authority = Authority(Registrations.from_toml(config))
    http = httpx.Client(transport=authority.transport())
    response = http.post(
        authority.token_endpoint,
        data={
            "grant_type": "client_credentials",
            "client_id": "bbbbbbbb-0000-4000-8000-000000000001",
            "client_secret": "shop-secret",
            "scope": "api://orders/.default",
        },
    )
    assert response.status_code == 200


BAD = [
    ("not toml", "this is = = not toml", "not valid TOML"),
    ("api without client id", "[apis.x]\nroles = []", "apis.x.client_id"),
    (
        "grant on unknown api",
        '[clients.c]\nclient_id = "1"\nroles = { nope = ["r"] }',
        "unknown api",
    ),
    ("empty secret", '[clients.c]\nclient_id = "1"\nsecrets = ["s", ""]', "clients.c.secrets"),
    ("roles not a list", '[apis.x]\nclient_id = "1"\nroles = 3', "apis.x.roles"),
    ("bad version", '[apis.x]\nclient_id = "1"\naccess_token_version = 3', "1 or 2"),
    (
        "missing certificate file",
        '[clients.c]\nclient_id = "1"\ncertificates = ["nope.pem"]',
        "cannot read",
    ),
    ("duplicate client id", '[apis.x]\nclient_id = "1"\n[clients.c]\nclient_id = "1"', "duplicate"),
    (
        # Client ids match in any case, so the second client could never be reached.
        "client ids differing only in case",
        '[clients.a]\nclient_id = "ab-cd"\n[clients.b]\nclient_id = "AB-CD"',
        "duplicate client id 'AB-CD'",
    ),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_toml_is_a_configuration_error(
    tmp_path: Path, case: str, text: str, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        Registrations.from_toml(path)


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        Registrations.from_toml(tmp_path / "absent.toml")


def test_a_file_that_is_not_utf8_is_a_configuration_error(tmp_path: Path) -> None:
    # A UnicodeDecodeError escaped, and `ccflow authority serve --config` died with a traceback.
    path = tmp_path / "latin1.toml"
    path.write_bytes('tenant_id = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigurationError, match=r"not valid TOML.*UTF-8"):
        Registrations.from_toml(path)


def test_secrets_from_toml_stay_out_of_repr(config: Path) -> None:
    assert "shop-secret" not in repr(Registrations.from_toml(config))


def test_two_apis_with_one_app_id_uri_are_a_configuration_error(tmp_path: Path) -> None:
    # The second API could never be reached: a scope names the first one.
    config = tmp_path / "registrations.toml"
    config.write_text(
        '[apis.orders]\nclient_id = "11111111-0000-4000-8000-000000000001"\n'
        'identifier_uri = "api://shop"\n'
        '[apis.payments]\nclient_id = "11111111-0000-4000-8000-000000000002"\n'
        'identifier_uri = "api://shop/"\n'
    )
    with pytest.raises(ConfigurationError, match="identifier_uri 'api://shop'"):
        Registrations.from_toml(config)


@pytest.mark.parametrize("tenant", ["my tenant", "a?b", "a#b", "ten%2Fant", "tab\\tbed"])
def test_a_tenant_id_no_url_can_carry_is_a_configuration_error(tmp_path: Path, tenant: str) -> None:
    # They were accepted: then `ccflow authority serve` started, and died (exit 1, "unexpected
    # ConfigurationError") building the endpoints it prints, or ("%2F") served only 404s.
    config = tmp_path / "registrations.toml"
    config.write_text(f'tenant_id = "{tenant}"\n')
    with pytest.raises(ConfigurationError, match="cannot be a tenant id"):
        Registrations.from_toml(config)
    config.write_text(f'tenants = ["{tenant}"]\n')
    with pytest.raises(ConfigurationError, match="cannot be a tenant id"):
        Registrations.from_toml(config)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('tenant = "11111111-2222-4333-8444-555555555555"\n', "the registrations file"),
        ('[client.shop]\nclient_id = "c"\nsecret = "s"\n', "the registrations file"),
        ('[apis.orders]\nclient_id = "a"\nrole = ["Orders.Read"]\n', "apis.orders"),
        (
            '[apis.orders]\nclient_id = "a"\nroles = ["Orders.Read"]\n'
            '[clients.shop]\nclient_id = "c"\nsecret = "s"\nrole = { orders = ["Orders.Read"] }\n',
            "clients.shop",
        ),
    ],
)
def test_a_misspelt_key_in_the_registrations_file_is_a_configuration_error(
    tmp_path: Path, text: str, where: str
) -> None:
    # It was ignored in silence: `role =` gave a client no grant (tokens without roles, 403s),
    # `[client.shop]` no client at all.
    config = tmp_path / "registrations.toml"
    config.write_text(text)
    with pytest.raises(ConfigurationError, match=f"unknown key.* in {where}; known: "):
        Registrations.from_toml(config)
