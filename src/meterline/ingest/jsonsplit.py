"""Cutting a JSON array into its elements without recursion.

msgspec skips nested values recursively, so an array holding one element
nested thousands deep fails as a whole. This scanner only tracks strings and
bracket depth, so any depth costs nothing but time; each element is then
validated (and, if bad, rejected) on its own. Used as the fallback when the
fast cut fails on depth.
"""

from __future__ import annotations

import re

# A JSON string as a whole, or one structural character.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},]', re.DOTALL)


def split_array(data: bytes) -> list[bytes] | None:
    """The raw elements of the top-level JSON array in `data`, or None when the
    brackets do not balance (the text cannot be cut into elements)."""
    text = data.strip()
    if text[:1] != b"[":
        return None
    depth = 0
    start = 0
    elements: list[bytes] = []
    end = -1
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token[:1] == b'"':
            continue
        if token in (b"[", b"{"):
            depth += 1
            if depth == 1:
                start = m.end()
        elif token in (b"]", b"}"):
            depth -= 1
            if depth < 0:
                return None
            if depth == 0:
                end = m.start()
                if text[m.end() :].strip():
                    return None
                break
        elif depth == 1:  # a comma between elements
            elements.append(text[start : m.start()].strip())
            start = m.end()
    if end < 0:
        return None
    last = text[start:end].strip()
    if last or elements:
        elements.append(last)
    return elements
