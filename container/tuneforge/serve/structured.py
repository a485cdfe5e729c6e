"""OpenAI's structured output (`response_format`) and tool calls (`tools`, `tool_choice`).

Both become a constraint on the generated text (guided.py): `json_object` any JSON object,
`json_schema` the given schema, a named or `required` tool choice the tool's arguments. Tools are
shown to the model through its chat template (`tools=`, as transformers renders them); a
template that does not use them gets the tool list in a system message instead.

`tool_choice: "auto"` leaves the text free and reads a call from it afterwards, when the model
wrote one the usual ways (`<tool_call>{...}</tool_call>`, or only a JSON object naming a tool).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from .errors import invalid

_SCALAR = {"type": ["string", "number", "boolean", "null"]}
# `json_object`: values are scalars, arrays of scalars or objects of scalars. outlines' own
# {"type": "object"} nests deeper and compiles to 4x the states, 25x the time (seconds on a
# 1k-token vocabulary, minutes on a 100k one); two levels keep the first request quick.
JSON_OBJECT_SCHEMA = {"type": "object", "additionalProperties": {"anyOf": [
    _SCALAR, {"type": "array", "items": _SCALAR}, {"type": "object", "additionalProperties": _SCALAR}]}}
TAGGED_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


@dataclass
class ToolPlan:
    """What the request asked of tools: how the answer is read back, and the rendering input."""

    tools: list[dict] = field(default_factory=list)  # OpenAI tool objects, checked
    mode: str = "none"  # none | auto | required | named
    named: str | None = None

    @property
    def schemas(self) -> dict[str, dict]:
        return {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in self.tools}


def response_schema(fmt) -> dict | None:
    """A read `response_format` (openai_types.ResponseFormat) -> the JSON schema the answer must
    follow (None: free text).

    OpenAI's forms, and the schema in `value` as TGI's grammar sends it (`{"type": "json", "value":
    schema}`) and as huggingface_hub's chat_completion rewrites a json_schema format
    (`{"type": "json_object", "value": schema}`).
    """
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type in ("json", "json_object"):
        return fmt.value or JSON_OBJECT_SCHEMA
    return fmt.json_schema.json_schema or JSON_OBJECT_SCHEMA


def tool_plan(body) -> ToolPlan:
    """A read chat body's `tools` and `tool_choice` (typed in openai_types.py) as one plan."""
    tools = body.raw.get("tools") or []  # as sent: the template renders what the client wrote
    return ToolPlan(tools, *_choice(body.tool_choice, [tool.function.name for tool in body.tools or ()]))


def _choice(choice, names: list[str]) -> tuple[str, str | None]:
    if choice is None:
        return ("auto" if names else "none"), None
    if isinstance(choice, str):  # none | auto | required
        if choice != "none" and not names:
            raise invalid(f"`tool_choice` is {choice!r} but the request has no `tools`")
        return choice, None
    name = choice.function.name
    if name not in names:
        raise invalid(f"`tool_choice.function.name` is {name!r}, which is not in `tools` ({names})")
    return "named", name


def tool_schema(plan: ToolPlan) -> dict | None:
    """The constraint a tool choice puts on the answer: a named tool's arguments, or for
    `required` one {"name", "arguments"} object for any of the tools."""
    if plan.mode == "named":
        return plan.schemas[plan.named]
    if plan.mode == "required":
        options = [{"type": "object", "properties": {"name": {"const": name}, "arguments": schema},
                    "required": ["name", "arguments"]} for name, schema in plan.schemas.items()]
        return options[0] if len(options) == 1 else {"anyOf": options}
    return None


def tool_calls(plan: ToolPlan, text: str) -> list[dict] | None:
    """The calls in a generated answer, in OpenAI's shape; None when it holds none."""
    if plan.mode == "named":
        return [_call(plan.named, text)]
    if plan.mode == "required":
        found = _json(text)
        return [_call(found["name"], json.dumps(found["arguments"], ensure_ascii=False))] if found else None
    if plan.mode == "auto":
        return _read_auto(plan, text)
    return None


def _read_auto(plan: ToolPlan, text: str) -> list[dict] | None:
    candidates = [_json(m) for m in TAGGED_CALL.findall(text)] or [_json(text.strip())]
    calls = []
    for found in candidates:
        if not isinstance(found, dict) or found.get("name") not in plan.schemas:
            return None
        arguments = found.get("arguments", found.get("parameters", {}))
        calls.append(_call(found["name"], arguments if isinstance(arguments, str)
                           else json.dumps(arguments, ensure_ascii=False)))
    return calls or None


def _json(text: str):
    try:
        return json.loads(text)
    except (ValueError, TypeError, RecursionError):  # ValueError: also numbers too long for Python
        return None


def _call(name: str, arguments: str) -> dict:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def template_messages(messages: list[dict], plan: ToolPlan, template: str) -> list[dict]:
    """Messages for a chat template: tool-call arguments as objects (as transformers' templates
    expect), and the tool list as a system message when the template does not render `tools`."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = dict(message, tool_calls=[_template_call(c) for c in calls])
        out.append(message)
    if plan.tools and "tools" not in template:
        listing = "You can call these tools. To call one, answer with only " \
                  '{"name": <tool name>, "arguments": <arguments object>}.\n' + \
                  "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in plan.tools)
        if out and out[0]["role"] == "system":
            out[0] = dict(out[0], content=out[0]["content"] + "\n\n" + listing)
        else:
            out.insert(0, {"role": "system", "content": listing})
    return out


def _template_call(call: dict) -> dict:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        parsed = _json(arguments)
        function["arguments"] = parsed if isinstance(parsed, dict) else arguments
    return {"id": call.get("id"), "type": "function", "function": function}
