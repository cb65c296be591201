"""Whatever a client sends, the authority answers 2xx or 4xx, never a 500 or an exception."""

from __future__ import annotations

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ccflow.authority import Authority

AUTHORITY = Authority()
HTTP = httpx.Client(transport=AUTHORITY.transport())
CALC = AUTHORITY.client("calc-client")

fields = st.sampled_from(
    [
        "grant_type",
        "client_id",
        "client_secret",
        "scope",
        "client_assertion",
        "client_assertion_type",
        "resource",
        "x",
    ]
)
values = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "client_credentials",
            CALC.client_id,
            CALC.secret or "",
            "api://x/.default",
            AUTHORITY.api("calc-api").default_scope,
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "eyJhbGciOiJQUzI1NiJ9.e30.AAAA",
        ]
    ),
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    form=st.dictionaries(fields, values, max_size=6),
    authorization=st.one_of(
        st.none(),
        st.text(max_size=60).map(lambda t: "Basic " + t),
        st.binary(max_size=40).map(lambda b: b.hex()),
    ),
)
def test_token_endpoint_never_fails_on_forms(
    form: dict[str, str], authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    try:
        response = HTTP.post(AUTHORITY.token_endpoint, data=form, headers=headers)
    except UnicodeEncodeError:
        return  # httpx itself refuses non-ASCII header values before sending
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.json()["error_description"].startswith("AADSTS")


@settings(deadline=None)
@given(
    body=st.binary(max_size=200),
    content_type=st.sampled_from(
        ["application/x-www-form-urlencoded", "application/json", "text/plain", ""]
    ),
)
def test_token_endpoint_never_fails_on_raw_bodies(body: bytes, content_type: str) -> None:
    response = HTTP.post(
        AUTHORITY.token_endpoint, content=body, headers={"Content-Type": content_type}
    )
    assert 400 <= response.status_code < 500


@settings(deadline=None)
@given(
    path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
)
def test_any_path_and_method(path: str, method: str) -> None:
    try:
        url = httpx.URL(AUTHORITY.host + "/" + path.lstrip("/"))
    except httpx.InvalidURL:
        return
    assert HTTP.request(method, url).status_code < 500
