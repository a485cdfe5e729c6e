"""Reading a request's JSON text for both servers (language and text-to-image): whatever the text
holds, either a document or a JsonBodyError whose message names the problem and is itself plain
UTF-8 text (never an echo of the bad input)."""

from __future__ import annotations

import json
import re
import sys

SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
SURROGATE = re.compile("[\ud800-\udfff]")


class JsonBodyError(ValueError):
    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.message, self.kind = message, kind  # kind: "malformed_json" or "validation"


def read_json(text: str):
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonBodyError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                            "malformed_json") from None
    except RecursionError:
        raise JsonBodyError(f"malformed JSON: nested too deeply (more than about {sys.getrecursionlimit()} "
                            "levels of arrays and objects)", "malformed_json") from None
    except ValueError:  # Python refuses to turn very long digit strings into integers
        raise JsonBodyError(f"malformed JSON: a number with more than {sys.get_int_max_str_digits()} digits",
                            "malformed_json") from None
    if SURROGATE_ESCAPE.search(text):
        path = lone_surrogate(document)
        if path is not None:
            raise JsonBodyError(f"`{path}` holds a lone UTF-16 surrogate escape (\\uD800-\\uDFFF), which is not "
                                "text; send a complete surrogate pair or the character itself in UTF-8", "validation")
    return document


def lone_surrogate(document) -> str | None:
    """Where a parsed JSON document holds a lone UTF-16 surrogate (`"\\ud800"`), e.g.
    `messages[0].content`; None when it holds none. Python's json accepts them, but they are not
    text: tokenizers and the UTF-8 answer would fail on them. Iterative, for any depth; a key is
    shown with its surrogates escaped, so the path itself is text."""
    stack = [(document, "")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            if SURROGATE.search(value):
                return where or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                shown = SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", key)
                path = f"{where}.{shown}" if where else shown
                if shown != key:
                    return path
                stack.append((item, path))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
    return None
