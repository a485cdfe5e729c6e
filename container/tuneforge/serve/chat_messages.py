"""OpenAI chat messages, typed: a union told apart by `role`, each holding text content (a string
or a list of text content parts). Read the same way from a chat body's `messages`, Llama-2
dialogs and /tokenize; a value outside the types is a 422 in the words the server has always used.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BeforeValidator, Discriminator, Field, StrictStr, Tag, TypeAdapter, ValidationError, model_validator

from .errors import invalid
from .fields import Loose, Worded, show, unset_when_empty

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")


class TextPart(Loose):
    type: Literal["text"]
    text: StrictStr


def _content_kind(value) -> str | None:
    return "text" if isinstance(value, str) else "parts" if isinstance(value, list) else None


Content = Annotated[Union[Annotated[StrictStr, Tag("text")], Annotated[list[TextPart], Tag("parts")]],
                    Discriminator(_content_kind)]


def _string_or_none(value):
    """`tool_call_id` and `name` of a tool message: kept when strings, else left out (as training)."""
    return value if isinstance(value, str) else None


class Message(Loose):
    content: Content

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)

    def for_template(self) -> dict:
        """The message as chat templates take it; `developer` (the openai SDK's system) is `system`."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.text}


class SystemMessage(Message):
    role: Literal["system", "developer"]


class UserMessage(Message):
    role: Literal["user"]


class AssistantMessage(Message):
    role: Literal["assistant"]
    tool_calls: Annotated[Optional[list], BeforeValidator(unset_when_empty)] = None

    @model_validator(mode="before")
    @classmethod
    def _calls_without_text(cls, data):
        """A message that only calls tools has empty content."""
        if isinstance(data, dict) and data.get("content") is None and data.get("tool_calls"):
            return {**data, "content": ""}
        return data

    def for_template(self) -> dict:
        return dict(super().for_template(), tool_calls=self.tool_calls) if self.tool_calls else super().for_template()


class ToolMessage(Message):
    role: Literal["tool"]
    tool_call_id: Annotated[Optional[str], BeforeValidator(_string_or_none)] = None
    name: Annotated[Optional[str], BeforeValidator(_string_or_none)] = None

    def for_template(self) -> dict:
        extra = {key: getattr(self, key) for key in ("tool_call_id", "name") if getattr(self, key) is not None}
        return {**super().for_template(), **extra}


def _message_words(where: str, loc: tuple, error: dict) -> str:
    if not loc or not isinstance(loc[0], int):
        return f"`{where}` must be a non-empty list of {{role, content}} messages"
    at = f"{where}[{loc[0]}]"
    if error["type"] == "union_tag_invalid" and len(loc) == 1:
        role = error["input"].get("role") if isinstance(error["input"], dict) else None
        return f"`{at}.role` must be one of {list(CHAT_ROLES)}, got {show(role)}"
    if len(loc) == 1:
        return f"`{at}` must be an object with `role` and `content`"
    if loc[2:3] == ("tool_calls",):
        return f"`{at}.tool_calls` must be a list"
    if loc[2:4] == ("content", "parts") and len(loc) > 4:
        return (f"`{at}.content[{loc[4]}]` must be {{\"type\": \"text\", \"text\": ...}}; "
                "only text content is supported")
    return f"`{at}.content` must be a string"


ChatMessage = Annotated[Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage], Field(discriminator="role")]
Messages = Optional[Annotated[list[ChatMessage], Worded(_message_words)]]


def _dialog_shape(value) -> str:
    return "dialogs" if isinstance(value, list) and value and isinstance(value[0], list) else "dialog"


def _dialog_words(where: str, loc: tuple, error: dict) -> str:
    """A message's words, named inside its dialog (`inputs[i]`; a single dialog is `inputs[0]`)."""
    if loc[:1] == ("dialogs",) and len(loc) > 1:
        return _message_words(f"{where}[{loc[1]}]", loc[2:], error)
    return _message_words(f"{where}[0]", loc[1:], error)


# JumpStart Llama-2 chat: [[messages], ...] (several dialogs) or [messages] (one)
Dialogs = Optional[Annotated[Union[Annotated[list[list[ChatMessage]], Tag("dialogs")],
                                   Annotated[list[ChatMessage], Tag("dialog")]],
                             Discriminator(_dialog_shape), Worded(_dialog_words)]]
_MESSAGES = TypeAdapter(Annotated[list[ChatMessage], Worded(_message_words)])


def read_messages(value: Any, where: str) -> list[Message]:
    """Messages sent outside a request model (/tokenize), read as a chat body's are."""
    if not isinstance(value, list):
        raise invalid(f"`{where}` must be a non-empty list of {{role, content}} messages")
    try:
        return _MESSAGES.validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise invalid(_message_words(where, tuple(error["loc"]), error)) from None
