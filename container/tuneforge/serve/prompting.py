"""Prompts as the model was taught them: plain text, prompt fields and chat messages rendered
through the saved PromptFormat or chat template (the same path training used)."""

from __future__ import annotations

from ..data.prompt import RENDER_SECONDS, TemplateTooSlow, apply_template, chat_template_for, template_fields
from .errors import PayloadError, invalid
from .structured import ToolPlan, template_messages


def render_input(limits, item, where: str) -> str:
    if isinstance(item, str):  # a question, or a prompt the client already wrote whole
        return limits.prompt_format.render_text(item)
    if isinstance(item, dict):
        return render_fields(limits, item, where)
    raise invalid(f"`{where}` must be a string or an object of prompt fields")


def render_fields(limits, row: dict, where: str) -> str:
    """Structured input ({"instruction": .., "context": ..}) through the saved template."""
    fmt = limits.prompt_format
    names = template_fields(fmt.prompt_template)
    if fmt.kind == "chat" or not names:
        raise invalid(f"`{where}` is an object, but this model takes "
                      + ("chat messages" if fmt.kind == "chat" else "plain text prompts"))
    unknown = [k for k in row if k not in names]
    if unknown:
        raise invalid(f"`{where}` has unknown field(s) {unknown}; this model's prompt template "
                      f"takes {names}")
    if not any(k in row for k in names):
        raise invalid(f"`{where}` has none of the prompt fields {names}")
    for key, value in row.items():
        if value is not None and not isinstance(value, (str, int, float)):
            raise invalid(f"`{where}.{key}` must be a string")
    return fmt.render_prompt({k: row.get(k) for k in names})


def render_chat(limits, messages: list | None, where: str, tools=None) -> str:
    """Read chat messages (chat_messages.Message) as the model's template renders a conversation."""
    if not messages:
        raise invalid(f"`{where}` must be a non-empty list of {{role, content}} messages")
    clean = [message.for_template() for message in messages]
    fmt = limits.prompt_format
    if fmt.takes_fields:  # an instruction fine-tune: its template, not a chat one
        if tools is not None and (tools.tools or any(m["role"] == "tool" for m in clean)):
            raise invalid("`tools` need a chat model; this model was fine-tuned on an instruction template")
        try:
            return fmt.render_messages([{"role": m["role"], "content": m["content"]} for m in clean])
        except ValueError as exc:
            raise invalid(f"`{where}` does not fit this model: {exc}. Send the conversation as one user "
                          "message, or the prompt fields as `inputs`") from None
    template = fmt.chat_template or chat_template_for(limits.tokenizer)
    plan = tools or ToolPlan()
    try:
        return apply_template(limits.tokenizer, template_messages(clean, plan, template), template,
                              add_generation_prompt=True, tools=list(plan.tools) or None)
    except TemplateTooSlow:
        raise PayloadError(500, f"the model's chat template did not render this conversation within "
                           f"{RENDER_SECONDS:g} s (a loop in the template); fix the template in the model "
                           "folder's tokenizer files", "chat_template") from None
    except Exception as exc:  # a template's raise_exception (e.g. roles must alternate)
        raise invalid(f"`{where}` does not fit the model's chat template: {exc}") from None
