"""The seller: who issues the documents (DESIGN §7, the catalog's `seller` section).

A versioned fact like a customer: every document shows the seller as known at
its cutoff, so a later change of address never rewrites what was sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from meterline.domain import catalog_input as ci
from meterline.domain.canonical import content_hash

_FIELDS = {"name", "address", "tax_id", "email"}


@dataclass(frozen=True)
class Seller:
    name: str
    address: tuple[str, ...] = ()
    tax_id: str | None = None
    email: str | None = None

    def definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "address": list(self.address)}
        if self.tax_id is not None:
            out["tax_id"] = self.tax_id
        if self.email is not None:
            out["email"] = self.email
        return out

    @property
    def content_hash(self) -> str:
        return content_hash(self.definition())


_fail = ci.catalog_error  # the one catalog vocabulary (domain/catalog_input.py)


def _text(raw: Any, path: str) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 256:
        raise _fail(path, "expected a non-empty string (at most 256 characters)")
    return raw.strip()


def parse_address(raw: Any, path: str) -> tuple[str, ...]:
    """An address: a list of lines, or one string with lines separated by newlines."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        lines = [ln.strip() for ln in raw.splitlines() if ln.strip()]
    elif isinstance(raw, list):
        lines = [_text(ln, f"{path}[{i}]") for i, ln in enumerate(raw)]
    else:
        raise _fail(path, "expected a list of lines or a string")
    if len(lines) > 8:
        raise _fail(path, "at most 8 lines")
    return tuple(lines)


def parse_seller(raw: Any, path: str = "seller") -> Seller | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail(path, "expected a mapping with name, address, tax_id")
    unknown = sorted(set(raw) - _FIELDS)
    if unknown:
        raise _fail(
            path, f"unknown field(s) {', '.join(unknown)} (expected {', '.join(sorted(_FIELDS))})"
        )
    if "name" not in raw:
        raise _fail(f"{path}.name", "missing")
    return Seller(
        _text(raw["name"], f"{path}.name"),
        parse_address(raw.get("address"), f"{path}.address"),
        None if raw.get("tax_id") is None else _text(raw["tax_id"], f"{path}.tax_id"),
        None if raw.get("email") is None else _text(raw["email"], f"{path}.email"),
    )
