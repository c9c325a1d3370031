"""Slow pure-Python twin of ``_jsonparse.nesting_depth``, for the parity tests only.

(``_jsonparse.parse_object`` has the standard library's ``json`` as its reference.)
"""

from __future__ import annotations


def nesting_depth(raw: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside strings, byte by byte."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        char = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest
