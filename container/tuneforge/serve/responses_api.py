"""OpenAI's Responses API (`POST /v1/responses`, `client.responses.create`) over the chat path.

A Responses body is rewritten into the chat body it means: `input` (a string, or a list of
messages whose content is a string or `input_text`/`output_text` parts) becomes `messages`,
`instructions` a first system message, `max_output_tokens` the token limit and `text.format` the
`response_format`. It is then parsed, rendered and generated exactly as a chat request, and the
answer is written in the Responses shape (`output[0]` a message with one `output_text` part).
Kept out: streaming, tools and `previous_response_id` (the server stores no responses); each is
refused with its reason.
"""

from __future__ import annotations

import time
import uuid

from .errors import invalid
from .invocation import Invocation

PASSED = ("model", "temperature", "top_p", "user", "metadata", "store", "truncation", "parallel_tool_calls")
REFUSED = {
    "stream": "streaming Responses are not served yet; leave `stream` unset (or use /v1/chat/completions)",
    "tools": "tools are not served on /v1/responses yet; use /v1/chat/completions for tool calls",
    "previous_response_id": "this server stores no responses; send the whole conversation as `input`",
    "background": "background responses are not served; leave `background` unset",
}
TEXT_PARTS = ("input_text", "output_text", "text")


def chat_body(body: dict) -> dict:
    """The chat completions body a Responses body asks for; a 422 names the field it cannot take."""
    for name, reason in REFUSED.items():
        if body.get(name):
            raise invalid(f"`{name}`: {reason}")
    unknown = sorted(set(body) - set(PASSED) - set(REFUSED) - {"input", "instructions", "max_output_tokens", "text"})
    if unknown:
        raise invalid(f"`{unknown[0]}` is not a Responses field this server takes")
    if "input" not in body:
        raise invalid("`input` is required: a string, or a list of {role, content} messages")
    messages = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    messages += _messages(body["input"])
    chat = {k: body[k] for k in ("model", "temperature", "top_p", "user") if k in body}
    chat["messages"] = messages
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if fmt and fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.get("name", "response"), "schema": fmt.get("schema") or {}}}
    elif fmt and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _messages(value) -> list[dict]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise invalid("`input` must be a string or a non-empty list of {role, content} messages")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or item.get("type", "message") != "message" or "role" not in item:
            raise invalid(f"`input[{i}]` must be a message: {{\"role\": ..., \"content\": ...}} (other input "
                          "items, such as function calls, are not served yet)")
        content = item.get("content")
        if isinstance(content, list):
            parts = [p for p in content if isinstance(p, dict) and p.get("type") in TEXT_PARTS]
            if len(parts) != len(content):
                raise invalid(f"`input[{i}].content` may hold only input_text / output_text parts")
            content = "".join(p.get("text", "") for p in parts)
        if not isinstance(content, str):
            raise invalid(f"`input[{i}].content` must be a string or a list of text parts")
        out.append({"role": item["role"], "content": content})
    return out


def render(inv: Invocation, result, chat_message, usage) -> dict:
    """The Responses answer for a chat invocation's result."""
    sequence = result.sequences[0]
    message, reason = chat_message(inv, sequence)
    text = message.get("content") or ""
    counts = usage(result.prompt_tokens, result.generated_tokens)
    return {
        "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
        "status": "incomplete" if reason == "length" else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if reason == "length" else None,
        "error": None, "model": inv.options["model"],
        "output": [{"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}],
        "parallel_tool_calls": False, "tool_choice": "none", "tools": [],
        "usage": {"input_tokens": counts["prompt_tokens"], "output_tokens": counts["completion_tokens"],
                  "total_tokens": counts["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}},
    }
