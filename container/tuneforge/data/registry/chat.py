"""chat: *.jsonl rows holding [{role, content}, ...] under dialog, messages or conversations."""

from __future__ import annotations

from ..formats import read_chat
from ._base import FormatDefaults


class ChatFormat(FormatDefaults):
    name = prompt_kind = "chat"
    position = 2
    stage = "flag"
    conversational = True
    read = staticmethod(read_chat)

    @staticmethod
    def detect(files, config) -> bool:
        return bool(config.chat_dataset)


FORMAT = ChatFormat()
