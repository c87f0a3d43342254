"""docs/ERRORS.md lists every stable error code, and only those."""

from __future__ import annotations

import re
from pathlib import Path

from meterline.domain.errors import ErrorCode

DOC = Path(__file__).resolve().parent.parent / "docs" / "ERRORS.md"


def test_every_error_code_is_documented_once() -> None:
    rows = re.findall(r"^\| `([A-Z_]+)` \|", DOC.read_text(), flags=re.M)
    assert sorted(rows) == sorted(c.value for c in ErrorCode)
    assert len(rows) == len(set(rows))
