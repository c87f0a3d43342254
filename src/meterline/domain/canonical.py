"""Canonical JSON: what is hashed, so it must be byte-identical everywhere.

Sorted keys, no whitespace, UTF-8, decimals as canonical numbers, no float.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec

from meterline.domain.decimals import fmt

_json = msgspec.json.Encoder(order="sorted")


def _to_plain(value: Any) -> Any:
    # Exact built-in types first (a document body is mostly dicts, lists and
    # strings; this path is hashed per issued and verified document). Anything
    # else, subclasses included, takes the general path below: same output.
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is dict:
        return {k if type(k) is str else str(k): _to_plain(v) for k, v in value.items()}
    if t is list:
        return [_to_plain(v) for v in value]
    if t is Decimal:
        return msgspec.Raw(fmt(value).encode())
    return _general(value)


def _general(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return msgspec.Raw(fmt(value).encode())
    if isinstance(value, float):
        raise TypeError("float has no place in canonical JSON; use Decimal")
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_to_plain(v) for v in value]
    raise TypeError(f"cannot canonicalise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Canonical JSON bytes of plain data (dict, list, str, int, Decimal, bool, None)."""
    return _json.encode(_to_plain(value))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(value: Any) -> str:
    """sha256 hex of the canonical JSON of ``value``."""
    return digest(dumps(value))
