"""Parser errors in plain words: what is wrong with the input, not how msgspec saw it.

msgspec says "JSON is malformed: trailing characters (byte 8)", "Input data was
truncated" or "number out of range - at `$[...][...]`"; a person sending events
needs "not valid JSON: unexpected characters after the JSON value (at byte 8)".
"""

from __future__ import annotations

import re

_BYTE = re.compile(r"\(byte (\d+)\)")
_PATH = re.compile(r" - at `[^`]*`")

_PHRASES = (
    ("trailing characters", "unexpected characters after the JSON value"),
    ("object keys must be strings", "expected a quoted key or }"),
    ("invalid character", "an unexpected character"),
    ("expected ','", "a missing , between values"),
    ("expected ':'", "a missing : after a key"),
    ("invalid escape character", "an invalid \\ escape in a string"),
    ("invalid utf-8", "text that is not UTF-8"),
)


def describe_decode_error(exc: Exception) -> str:
    """`not valid JSON: <what> (at byte N)` for a msgspec.DecodeError."""
    text = str(exc)
    if "truncated" in text.lower() or not text:
        return "not valid JSON: it ends before the JSON value is complete"
    byte = _BYTE.search(text)
    where = f" (at byte {byte.group(1)})" if byte else ""
    detail = _BYTE.sub("", text).replace("JSON is malformed:", "").strip().rstrip(".")
    for raw, plain in _PHRASES:
        if raw in detail.lower():
            detail = plain
            break
    return f"not valid JSON: {detail}{where}" if detail else f"not valid JSON{where}"


def describe_validation_error(exc: Exception) -> str:
    """A value the decoder refused (numbers beyond the exact range) in plain words."""
    text = _PATH.sub("", str(exc)).strip()
    if "number out of range" in text.lower():
        return "a number is out of range (too large or too small to keep exactly)"
    return text
