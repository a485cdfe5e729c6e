"""Reading one field of a request body: type, range and a message naming the field.

Every check raises a 422 PayloadError whose message says which field (with its prefix, e.g.
`parameters.temperature`), what is allowed and what was sent (cut short).
"""

from __future__ import annotations

import math
import re

from .errors import invalid

_SURROGATE = re.compile("[\ud800-\udfff]")


def text_content(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(f"`{where}[{i}]` must be {{\"type\": \"text\", \"text\": ...}}; "
                              "only text content is supported")
            parts.append(part["text"])
        return "".join(parts)
    raise invalid(f"`{where}` must be a string")


def read_bool(params: dict, name: str, default: bool, prefix: str) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"`{prefix}{name}` must be true or false, got {show(value)}")
    return value


def read_int(params: dict, name: str, low: int, high: int | None, default, prefix: str):
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    span = f"between {low} and {high}" if high is not None else f"at least {low}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise invalid(f"`{prefix}{name}` must be an integer {span}, got {show(value)}")
    return value


def read_float(params: dict, name: str, low: float, high: float, default: float, prefix: str, *,
           open_low: bool) -> float:
    value = params.get(name)
    if value is None:
        return default
    bracket = "(" if open_low else "["
    span = f"{bracket}{low:g}, {high:g}]"
    if isinstance(value, float) and not math.isfinite(value):  # json reads NaN, Infinity, -Infinity
        raise invalid(f"`{prefix}{name}` must be a finite number in {span}, got {value!r}")
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if not bad:
        bad = value < low or (open_low and value == low) or value > high
    if bad:
        raise invalid(f"`{prefix}{name}` must be a number in {span}, got {show(value)}")
    return float(value)


def read_stop(params: dict, prefix: str, most: int, longest: int) -> tuple[str, ...]:
    """A string or a list of non-empty strings; an empty list means no stop sequence."""
    value = params.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise invalid(f"`{prefix}stop` must be a non-empty string or a list of non-empty strings")
    if len(items) > most:
        raise invalid(f"`{prefix}stop` holds {len(items)} sequences; at most {most} are allowed "
                      "(TUNEFORGE_MAX_STOP_SEQUENCES)")
    for i, item in enumerate(items):
        if len(item) > longest:
            where = f"{prefix}stop" if isinstance(value, str) else f"{prefix}stop[{i}]"
            raise invalid(f"`{where}` is {len(item)} characters long; a stop sequence may have at most "
                          f"{longest} (TUNEFORGE_MAX_STOP_SEQUENCE_CHARS)")
    return tuple(items)


def show(value, most: int = 60) -> str:
    """repr for an error message, cut short: a 6 MB value must not come back in the answer."""
    try:
        text = repr(value)
    except RecursionError:  # a deeply nested list or object
        return f"a deeply nested {type(value).__name__}"
    return text if len(text) <= most else text[:most] + f"... ({len(text)} characters)"


def lone_surrogate(document) -> str | None:
    """Where a parsed JSON document holds a lone UTF-16 surrogate (`"\\ud800"`), e.g.
    `messages[0].content`; None when it holds none. Python's json accepts them, but they are not
    text: tokenizers and the UTF-8 answer would fail on them. Iterative, for any depth."""
    stack = [(document, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return where or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{key}" if where else str(key)
                if _SURROGATE.search(key):
                    return path
                stack.append((item, path))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
    return None
