"""ClientSecret: post and basic forms, special characters, and the secret kept out of sight."""

from __future__ import annotations

import base64
import doctest
import pickle
from urllib.parse import unquote_plus

import pytest

import ccflow.credentials as credentials_module
from ccflow import ClientSecret, ConfigurationError, Credential
from ccflow.credentials import credential_from_env

ENDPOINT = "https://login.test/t/oauth2/v2.0/token"
SECRET = "a+b/c%d&e=f:g~h i"


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(credentials_module).failed == 0


def test_is_a_credential() -> None:
    assert isinstance(ClientSecret("s"), Credential)


def test_post_sends_id_and_secret_as_form_fields() -> None:
    f = ClientSecret(SECRET).request_fields(
        client_id="cid", token_endpoint=ENDPOINT, auth_method="client_secret_post", now=0.0
    )
    assert f.form == (("client_id", "cid"), ("client_secret", SECRET))
    assert f.headers == ()


@pytest.mark.parametrize("secret", [SECRET, "plain", "::::", "%%%", "==", "ü-ñ"])
def test_basic_form_urlencodes_before_base64(secret: str) -> None:
    f = ClientSecret(secret).request_fields(
        client_id="my:id", token_endpoint=ENDPOINT, auth_method="client_secret_basic", now=0.0
    )
    assert f.form == ()
    ((name, value),) = f.headers
    assert name == "Authorization"
    scheme, encoded = value.split(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    assert unquote_plus(user) == "my:id"
    assert unquote_plus(password) == secret


def test_unknown_auth_method_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientSecret("s").request_fields(
            client_id="c", token_endpoint=ENDPOINT, auth_method="private_key_jwt", now=0.0
        )
    assert info.value.setting == "auth_method"


@pytest.mark.parametrize("secret", ["", "   ", "\n"])
def test_empty_or_blank_secret_is_refused(secret: str) -> None:
    # A blank secret (an AZURE_CLIENT_SECRET of spaces) was sent and came back as AADSTS7000215.
    with pytest.raises(ConfigurationError, match="empty") as info:
        ClientSecret(secret)
    assert info.value.setting == "client_secret"


def test_secret_is_hidden_from_repr_and_str() -> None:
    cred = ClientSecret(SECRET)
    assert SECRET not in repr(cred)
    assert SECRET not in str(cred)
    assert "redacted" in repr(cred)


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ClientSecret(SECRET))


def test_from_env_prefers_the_secret() -> None:
    cred = credential_from_env({"AZURE_CLIENT_SECRET": "s"})
    assert isinstance(cred, ClientSecret)
    assert cred.secret == "s"


def test_from_env_names_what_is_missing() -> None:
    with pytest.raises(ConfigurationError, match="AZURE_CLIENT_SECRET"):
        credential_from_env({})
