"""Did fine-tuning make the model forget what it knew? A small bundled set of general questions
(capitals, arithmetic, simple facts), asked the way the fine-tuned data asks (the chat template,
or the instruction template with the question in its first field), greedy, before and after
training. The score is the share answered right: an expected word appears in the answer.
metrics.json reports both under `general_knowledge`; a large drop means the fine-tune overwrote
general ability (lower the learning rate or the epochs, or use LoRA).
"""

from __future__ import annotations

import re

from ..data.registry import FORMATS
from ..data.prompt import render_chat

# (question, accepted answers as whole words, lower case)
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("What is the capital of France?", ("paris",)),
    ("What is the capital of Japan?", ("tokyo",)),
    ("What is the capital of Italy?", ("rome",)),
    ("What is the capital of Germany?", ("berlin",)),
    ("What is 2 + 3?", ("5", "five")),
    ("What is 10 minus 4?", ("6", "six")),
    ("How many days are in a week?", ("7", "seven")),
    ("How many legs does a spider have?", ("8", "eight")),
    ("What color is the sky on a clear day?", ("blue",)),
    ("What is the largest planet in our solar system?", ("jupiter",)),
    ("Who wrote Romeo and Juliet?", ("shakespeare",)),
    ("What do bees make?", ("honey",)),
]
MAX_NEW_TOKENS = 24


def prompts(tokenizer, prompt_format, data_format: str) -> list[str] | None:
    """The questions rendered as the training data renders a prompt; None when the format has no
    question to put them in (domain text)."""
    if FORMATS[data_format].conversational:
        return [render_chat(tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True,
                            chat_template=prompt_format.chat_template) for q, _ in QUESTIONS]
    if prompt_format.takes_fields:  # instruction or table data: as the server renders a plain question
        return [prompt_format.render_messages([{"role": "user", "content": q}]) for q, _ in QUESTIONS]
    return None


def correct(answer: str, accepted: tuple[str, ...]) -> bool:
    words = set(re.findall(r"[a-z0-9]+", answer.lower()))
    return any(word in words for word in accepted)


def score(answers: list[str]) -> dict:
    right = [correct(a, accepted) for a, (_, accepted) in zip(answers, QUESTIONS)]
    return {"score": round(sum(right) / len(right), 4), "right": sum(right), "asked": len(right),
            "answers": [{"question": q, "answer": a, "right": r} for (q, _), a, r in zip(QUESTIONS, answers, right)]}
