"""One prompt-formatting path for training and serving.

Training renders every example through a PromptFormat and saves it in model/tuneforge.json;
the server loads the same PromptFormat, so what the model learned is what it is asked.
"""

from __future__ import annotations

import contextlib
import json
import string
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import HyperparameterError, ModelError, UserError

DEMARCATION_KEY = "\n\n### Response:\n"

# JumpStart's default for Llama/Mistral/Falcon instruction tuning (Dolly fields).
DOLLY_TEMPLATE = {
    "prompt": (
        "Below is an instruction that describes a task, paired with an input that provides "
        "further context. Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{context}"
    ),
    "completion": "{response}",
}

# Used when the tokenizer has no chat template of its own. Documented in docs/data-formats.md.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

def template_fields(template: str) -> list[str]:
    """Names of the {placeholders} in a template, in order, without repeats."""
    names: list[str] = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name != "" and name not in names:
            names.append(name)
    return names


@dataclass
class PromptFormat:
    """How rows become (prompt, completion) text, saved beside the model."""

    kind: str  # instruction | chat | domain | table
    prompt_template: str = "{prompt}"
    completion_template: str = "{completion}"
    demarcation: str = ""
    chat_template: str | None = None  # only when the tokenizer has none
    fields: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.fields:
            self.fields = template_fields(self.prompt_template)

    def render_prompt(self, row: dict) -> str:
        text = self.prompt_template.format(**{k: _text(row[k]) for k in template_fields(self.prompt_template)})
        return text + self.demarcation

    def render_completion(self, row: dict) -> str:
        names = template_fields(self.completion_template)
        return self.completion_template.format(**{k: _text(row[k]) for k in names})

    @property
    def takes_fields(self) -> bool:
        """Whether serving renders plain text and single chat turns through prompt_template: an
        instruction or table fine-tune whose template has a field to put the text in."""
        from .registry import FORMATS  # the formats read rows with this module: imported on use

        rows = FORMATS.get(self.kind)
        return rows is not None and rows.templated and bool(template_fields(self.prompt_template))

    def render_text(self, text: str) -> str:
        """A plain prompt as training rendered one: the text fills the template's first field,
        the other fields are empty. Text that already is a rendered prompt (it holds the
        demarcation or a piece of the template's own fixed text) is returned as it is."""
        if not self.takes_fields or self.is_rendered(text):
            return text
        return self._render_first_field(text)

    def is_rendered(self, text: str) -> bool:
        """Whether a client already wrote the whole prompt (JumpStart's clients do)."""
        pieces = [literal.strip() for literal, *_ in string.Formatter().parse(self.prompt_template)]
        return any(piece and piece in text for piece in [self.demarcation.strip(), *pieces])

    def render_messages(self, messages: list[dict]) -> str:
        """One user turn, after at most one system turn, through the template training used.

        The system content goes before the user content (a blank line between), so every
        template takes it. Raises ValueError for anything else (an instruction fine-tune never
        saw a conversation)."""
        system = [m for m in messages[:1] if m["role"] == "system"]
        rest = messages[len(system):]
        if len(rest) != 1 or rest[0]["role"] != "user":
            roles = ", ".join(m["role"] for m in messages)
            raise ValueError(
                f"this model was fine-tuned on single prompts ({self.kind} data), so it takes one user "
                f"message, optionally after one system message; got the roles [{roles}]")
        text = rest[0]["content"]
        if system and system[0]["content"]:
            text = system[0]["content"] + "\n\n" + text
        return self._render_first_field(text)

    def _render_first_field(self, text: str) -> str:
        names = template_fields(self.prompt_template)
        return self.render_prompt({name: text if i == 0 else "" for i, name in enumerate(names)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PromptFormat":
        known = {k: data[k] for k in ("kind", "prompt_template", "completion_template",
                                      "demarcation", "chat_template", "fields") if k in data}
        return cls(**known)


def _text(value) -> str:
    return "" if value is None else str(value)


RENDER_SECONDS = 10.0  # a chat template renders one conversation in milliseconds
MAX_RENDERED_CHARS = 64 << 20  # the longest line the data reader accepts
BOUNDED_FIX = ("make the template's loops run over the messages only (no large range()); a chat template "
               "renders one conversation in milliseconds")


def chat_template_for(tokenizer) -> str:
    return getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE


def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool,
                chat_template: str | None = None) -> str:
    """Render a conversation with the tokenizer's chat template, else ours; a Jinja error is a
    UserError naming where the template came from."""
    from jinja2 import TemplateError

    template = chat_template or chat_template_for(tokenizer)
    try:
        text = apply_template(tokenizer, [{"role": m["role"], "content": m["content"]} for m in messages], template,
                              add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:
        raise chat_template_error(exc, tokenizer, template) from None
    except TemplateTooSlow:
        where, kind = chat_template_source(tokenizer, template)
        raise kind(f"the chat template did not finish one conversation within the limit of {RENDER_SECONDS:g} s",
                   where=where, fix=BOUNDED_FIX) from None
    if len(text) > MAX_RENDERED_CHARS:
        where, kind = chat_template_source(tokenizer, template)
        raise kind(f"the chat template made {len(text):,} characters of one conversation, over the limit of "
                   f"{MAX_RENDERED_CHARS:,} characters", where=where, fix=BOUNDED_FIX)
    return text


def apply_template(tokenizer, messages: list[dict], template: str, *, add_generation_prompt: bool,
                   tools: list | None = None) -> str:
    """tokenizer.apply_chat_template within RENDER_SECONDS (TemplateTooSlow past them): training's
    and serving's one way to run a chat template."""
    with time_limit(RENDER_SECONDS):
        return tokenizer.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)


class TemplateTooSlow(Exception):
    """A render ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TemplateTooSlow inside the block once `seconds` have passed, in whichever thread runs
    it (a serving request thread too): a timer thread raises it asynchronously in this one, which
    Python delivers between bytecodes, so a template's endless loop stops. Nothing is raised once
    the block is left."""
    import ctypes

    target, lock, active = threading.get_ident(), threading.Lock(), [True]

    def expire():
        with lock:
            if active[0]:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(target), ctypes.py_object(TemplateTooSlow))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            active[0] = False
        timer.cancel()


def chat_template_source(tokenizer, template: str) -> tuple[str, type[UserError]]:
    """Where a chat template came from, and the error class for it: a file of the tokenizer's
    folder (the model channel), else the chat_template hyperparameter."""
    if template == DEFAULT_CHAT_TEMPLATE:
        return "tuneforge's default chat template", UserError
    folder = Path(getattr(tokenizer, "name_or_path", "") or ".")
    for name in ("chat_template.jinja", "tokenizer_config.json", "chat_template.json"):
        path = folder / name
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text()
            found = json.loads(text).get("chat_template") if path.suffix == ".json" else text
            found = [t.get("template") for t in found if isinstance(t, dict)] if isinstance(found, list) else [found]
            if template in found:
                return str(path), ModelError
    return "hyperparameter chat_template", HyperparameterError


def chat_template_error(exc, tokenizer, template: str) -> UserError:
    """A Jinja error of a chat template as the message a user reads."""
    from jinja2 import TemplateSyntaxError
    from jinja2.exceptions import SecurityError

    where, kind = chat_template_source(tokenizer, template)
    if isinstance(exc, SecurityError):
        return kind(f"the chat template touches Python objects, which templates may not do ({exc})", where=where,
                    fix="use only the template's variables (messages, add_generation_prompt, bos_token, "
                        "eos_token) with Jinja's own filters and tests, and no attribute that starts with _")
    if isinstance(exc, TemplateSyntaxError):
        return kind(f"the chat template is not valid Jinja (template line {exc.lineno}: {exc.message})",
                    where=where, fix="correct the template's syntax")
    return kind(f"the chat template stopped with an error ({exc})", where=where,
                fix="correct the template, or the conversations it refuses")


def token_ids(tokenizer, text: str) -> list[int]:
    """Ids of `text` with nothing added; special tokens written in the text (a chat template's
    {{ bos_token }}, eos_token) are kept as such."""
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def with_bos(tokenizer, ids: list[int]) -> list[int]:
    """The one BOS rule of training and serving: exactly one BOS first (causal models), whether
    or not the rendered text already starts with it (Llama 2, Mistral and Gemma templates do)."""
    bos = tokenizer.bos_token_id
    if bos is None or (ids and ids[0] == bos):
        return ids
    return [bos] + ids


def encode_prompt(tokenizer, text: str, *, seq2seq: bool) -> list[int]:
    """Token ids of a prompt exactly as training built them (training calls this too).

    Special tokens are added here, not by the tokenizer, so every family gets the same layout:
    causal = [bos] + prompt (no second bos when the rendered text already starts with it);
    seq2seq = prompt + [eos].
    """
    ids = token_ids(tokenizer, text)
    if seq2seq:
        return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    return with_bos(tokenizer, ids)


def chat_segments(tokenizer, messages: list[dict], chat_template: str | None = None) -> list[tuple[str, bool]]:
    """(text, trainable) pieces of a rendered conversation; only assistant turns are trainable.

    Each assistant turn's context is rendered exactly as serving renders it
    (add_generation_prompt=True), so the pieces join into the text the server would see.
    Raises ValueError when the template does not render conversations prefix by prefix.
    """
    segments, done = [], ""
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            header = render_chat(tokenizer, messages[:index], add_generation_prompt=True,
                                 chat_template=chat_template) if index else ""
            if not header.startswith(done):
                raise ValueError("the chat template does not render conversations prefix by prefix")
            segments.append((header[len(done):], False))
            done = header
        upto = render_chat(tokenizer, messages[: index + 1], add_generation_prompt=False,
                           chat_template=chat_template)
        if not upto.startswith(done):
            raise ValueError("the chat template does not render conversations prefix by prefix")
        segments.append((upto[len(done):], message["role"] == "assistant"))
        done = upto
    return [(text, trainable) for text, trainable in segments if text]


def encode_chat(tokenizer, segments: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Ids of a conversation and which of them are trainable, with the BOS rule applied.

    The whole text is tokenized at once (as the server tokenizes a rendered prompt) and tokens
    are marked by where they start, so the ids before an assistant turn are the ids serving
    gives that turn's prompt. Tokenizers without offsets fall back to piece by piece.
    """
    text = "".join(t for t, _ in segments)
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        spans, pos = [], 0
        for piece, trainable in segments:
            if trainable:
                spans.append((pos, pos + len(piece)))
            pos += len(piece)
        mask = [any(a <= start < b for a, b in spans) for start, _ in offsets]
    else:
        ids, mask = [], []
        for piece, trainable in segments:
            piece_ids = token_ids(tokenizer, piece)
            ids += piece_ids
            mask += [trainable] * len(piece_ids)
    full = with_bos(tokenizer, ids)
    return full, [False] * (len(full) - len(ids)) + mask
