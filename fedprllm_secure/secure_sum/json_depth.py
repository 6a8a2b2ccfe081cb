"""The nesting depth of a JSON text, bounded before it is parsed (the state codec's guard)."""

from __future__ import annotations

import re

import numpy as np

# JSON strings, including an unterminated one at the end: each match consumes its text, so the
# scan is linear whatever the quotes and backslashes. Brackets inside strings are not nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = np.full(256, -1, dtype=np.int32)
_DEPTH_STEP[[ord("["), ord("{")]] = 1


def bracket_depth(brackets: bytes) -> int:
    """The deepest running level of a string of `[]{}` bytes (openers +1, closers -1)."""
    deepest, level = 0, 0
    for start in range(0, len(brackets), 1 << 20):
        steps = _DEPTH_STEP[np.frombuffer(brackets[start : start + (1 << 20)], dtype=np.uint8)]
        levels = np.cumsum(steps, dtype=np.int64) + level
        deepest = max(deepest, int(levels.max()))
        level = int(levels[-1])
    return deepest


def json_depth(text: bytes) -> int:
    """The deepest nesting of arrays and objects in `text`, counted without parsing it.

    Exact for valid JSON; on invalid JSON never below the depth a parser reaches before it fails
    (up to the first error the tokens agree), so checking it first bounds `json.loads`.
    """
    return bracket_depth(_JSON_STRING.sub(b"", text).translate(None, _NOT_BRACKET))


def nested_deeper_than(text: bytes, limit: int) -> bool:
    """True when `text` nests arrays and objects more than `limit` deep (not parsed)."""
    # Fast path: brackets inside strings counted too can only overstate the depth (saved states
    # rarely have any: base64 has none); strings are stripped only when that bound is over.
    if bracket_depth(text.translate(None, _NOT_BRACKET)) <= limit:
        return False
    return json_depth(text) > limit
