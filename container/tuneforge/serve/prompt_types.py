"""The prompts a request holds, typed: TGI's and Flan-T5's inputs (a string, an object of prompt
fields or a list of them), OpenAI completions' prompt (a string, token ids or a list of either) and
TGI's `grammar` (a union told apart by its `type`). Each is read with the rest of the body; a value
outside it is a 422 in the words the server has always used (fields.Worded). What only the model
can say (the prompt fields its template takes, its vocabulary) is checked while converting.
"""

from __future__ import annotations

import json
from typing import Annotated, Literal, Optional, Union

from pydantic import BeforeValidator, Discriminator, Field, JsonValue, StrictInt, StrictStr, Tag

from .fields import Loose, Worded

JsonObject = dict[str, JsonValue]


def _input_shape(value) -> str | None:
    return "text" if isinstance(value, str) else "fields" if isinstance(value, dict) else \
        "list" if isinstance(value, list) else None


def _input_words(where: str, loc: tuple, error: dict) -> str:
    at = f"{where}[{loc[1]}]" if loc[:1] == ("list",) and len(loc) > 1 else where
    return f"`{at}` must be a string or an object of prompt fields"


PromptInput = Annotated[Union[Annotated[StrictStr, Tag("text")], Annotated[JsonObject, Tag("fields")]],
                        Discriminator(lambda value: None if isinstance(value, list) else _input_shape(value))]
# null or absent: refused while converting, where a missing input is named
Inputs = Optional[Annotated[Union[Annotated[StrictStr, Tag("text")], Annotated[JsonObject, Tag("fields")],
                                  Annotated[list[PromptInput], Tag("list")]],
                            Discriminator(_input_shape), Worded(_input_words)]]


def is_token(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _prompt_shape(value) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and value and all(is_token(t) for t in value):
        return "ids"
    return "batch" if isinstance(value, list) else None


def _batch_item_shape(value) -> str | None:
    if isinstance(value, str):
        return "text"
    return "ids" if isinstance(value, list) and all(is_token(t) for t in value) else None


def _prompt_words(where: str, loc: tuple, error: dict) -> str:
    if loc[:1] == ("batch",) and len(loc) > 1:
        return f"`{where}[{loc[1]}]` must be a string or a list of token ids (integers)"
    return f"`{where}` must be a string, a list of strings, a list of token ids or a list of token-id lists"


TokenIds = list[StrictInt]
BatchItem = Annotated[Union[Annotated[StrictStr, Tag("text")], Annotated[TokenIds, Tag("ids")]],
                      Discriminator(_batch_item_shape)]
CompletionPrompt = Optional[Annotated[Union[Annotated[StrictStr, Tag("text")], Annotated[TokenIds, Tag("ids")],
                                            Annotated[list[BatchItem], Tag("batch")]],
                                      Discriminator(_prompt_shape), Worded(_prompt_words)]]


def _json_text(value):
    """TGI sends a json grammar's schema as an object or as JSON text."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or numbers too long for Python
        return None


class RegexGrammar(Loose):
    type: Literal["regex"]
    value: StrictStr


class JsonGrammar(Loose):
    type: Literal["json"]
    value: Annotated[JsonObject, BeforeValidator(_json_text)]


Grammar = Optional[Annotated[Union[RegexGrammar, JsonGrammar], Field(discriminator="type"),
                             Worded(lambda where, loc, error: f'`{where}` must be {{"type": "json", "value": '
                                                              '<JSON schema>} or {"type": "regex", "value": '
                                                              '<pattern>}')]]
