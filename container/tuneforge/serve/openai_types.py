"""The OpenAI chat objects a request holds, typed: `tools`, `tool_choice` and `response_format`.

Each is a pydantic type (`response_format` a union told apart by its `type`), read with the rest
of the body; a value outside it is a 422 worded by the field's own `Worded` (fields.py), the same
words the server has always answered with. What no type can say (a tool choice naming a tool the
request does not list, `required` with no tools) is checked in structured.py.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BeforeValidator, Field, JsonValue, StrictStr

from .fields import Loose, Worded, unset_when_empty

NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
JsonObject = dict[str, JsonValue]
# `model`: a name naming one of the folder's adapters runs on it; anything else (a name, or not a
# string) gets the weights alone
ModelName = Annotated[Optional[str], BeforeValidator(lambda value: value if isinstance(value, str) else None)]


def _tool_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError("not a tool name")
    return name


class FunctionSpec(Loose):
    name: Annotated[StrictStr, AfterValidator(_tool_name)]
    parameters: JsonObject = {}


class FunctionTool(Loose):
    type: Literal["function"]
    function: FunctionSpec


def _tools_words(where: str, loc: tuple, error: dict) -> str:
    if not loc or not isinstance(loc[0], int):
        return "`tools` must be a list of {\"type\": \"function\", \"function\": {...}} objects"
    where = f"tools[{loc[0]}]"
    if loc[1:3] == ("function", "name"):
        return f"`{where}.function.name` must be 1-64 letters, digits, _ . or -"
    if loc[1:3] == ("function", "parameters"):
        return f"`{where}.function.parameters` must be a JSON schema object"
    return f"`{where}` must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": {{...}}}}}}"


# Worded sits inside Optional: pydantic moves a field's outermost Annotated metadata off its annotation
Tools = Annotated[Optional[Annotated[list[FunctionTool], Worded(_tools_words)]], BeforeValidator(unset_when_empty)]


class FunctionName(Loose):
    name: StrictStr


class NamedToolChoice(Loose):
    type: Literal["function"]
    function: FunctionName


ToolChoice = Optional[Annotated[Union[Literal["none", "auto", "required"], NamedToolChoice],
                                Worded(lambda where, loc, error: '`tool_choice` must be "none", "auto", "required" '
                                                                 'or {"type": "function", "function": {"name": ...}}')]]


class TextFormat(Loose):
    type: Literal["text"]


class JsonObjectFormat(Loose):
    """`json_object` any JSON object, or the schema in `value` (TGI's `json`, huggingface_hub's form)."""

    type: Literal["json_object", "json"]
    value: JsonObject = None  # absent: any object; null is refused


class JsonSchemaSpec(Loose):
    name: Optional[StrictStr] = None
    json_schema: JsonObject = Field(default=None, alias="schema")  # absent: any object; null is refused


class JsonSchemaFormat(Loose):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


def _format_words(where: str, loc: tuple, error: dict) -> str:
    if "value" in loc[1:]:
        return "`response_format.value` must be a JSON schema (an object)"
    if "json_schema" in loc[1:]:
        return "`response_format.json_schema` must be an object with `name` and `schema` (a JSON schema)"
    return ('`response_format.type` must be "text", "json_object" or "json_schema" (or TGI\'s "json" '
            'with the schema in `value`)')


ResponseFormat = Optional[Annotated[Union[TextFormat, JsonObjectFormat, JsonSchemaFormat],
                                    Field(discriminator="type"), Worded(_format_words)]]
