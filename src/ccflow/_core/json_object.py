"""A value that must be one JSON object: JSON text, or a mapping parsed already.

Discovery and JWKS documents and a token's header and claims are read the same way; each
names itself in the error::

    >>> json_object(b'{"keys": []}', "the JWKS document", ValueError)
    {'keys': []}
    >>> json_object(b"[]", "the JWKS document", ValueError)
    Traceback (most recent call last):
    ValueError: the JWKS document is not a JSON object
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["json_object"]


def json_object(
    document: bytes | str | Mapping[str, Any], what: str, error: Callable[[str], Exception]
) -> Mapping[str, Any]:
    """``document`` as a JSON object; else ``error("<what> is not valid JSON")`` or
    ``error("<what> is not a JSON object")`` is raised."""
    if isinstance(document, (bytes, str)):
        try:
            document = json.loads(document)
        except (ValueError, RecursionError):
            raise error(f"{what} is not valid JSON") from None
    if not isinstance(document, Mapping):
        raise error(f"{what} is not a JSON object")
    return document
