"""Sample data sets, generated deterministically, for the demo, the tests and the tiny tokenizer.

The instruction task is one a fresh model cannot answer and a tiny model can learn in a few
epochs: name an item's colour, ignoring a distracting context sentence.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

ITEMS = {
    "banana": "yellow", "lemon": "yellow", "cherry": "red", "tomato": "red", "strawberry": "red",
    "lime": "green", "cucumber": "green", "spinach": "green", "blueberry": "blue",
    "sapphire": "blue", "plum": "purple", "eggplant": "purple", "carrot": "orange",
    "pumpkin": "orange", "coal": "black", "raven": "black", "snow": "white", "milk": "white",
    "chocolate": "brown", "walnut": "brown", "flamingo": "pink", "salmon": "pink",
    "emerald": "green", "ruby": "red",
}
QUESTIONS = [
    "What color is the {item}?",
    "Tell me the color of the {item}.",
    "Which color does a {item} have?",
    "Name the color of the {item}.",
]
WORDS = (
    "the a river mountain city garden window morning evening market teacher student music "
    "quiet bright old new small large walks reads builds paints writes sings near under over "
    "beside every some many few people children engine paper stone forest ocean cloud train "
    "station library kitchen bridge village winter summer autumn spring yesterday today slowly "
    "quickly carefully happily language history science number letter story table chair door"
).split()


def _sentence(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    return " ".join(words).capitalize() + "."


def instruction_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        item = rng.choice(sorted(ITEMS))
        rows.append({
            "instruction": rng.choice(QUESTIONS).format(item=item),
            "context": _sentence(rng, rng.randint(4, 9)),
            "response": f"The {item} is {ITEMS[item]}.",
        })
    return rows


def chat_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for row in instruction_rows(n, seed):
        dialog = [{"role": "user", "content": row["instruction"]},
                  {"role": "assistant", "content": row["response"]}]
        if rng.random() < 0.5:
            dialog.insert(0, {"role": "system", "content": "You answer in one short sentence."})
        rows.append({"dialog": dialog})
    return rows


def domain_text(n_paragraphs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    paragraphs = []
    for _ in range(n_paragraphs):
        item = rng.choice(sorted(ITEMS))
        facts = [f"The {item} is {ITEMS[item]}.", _sentence(rng, rng.randint(5, 10))]
        rng.shuffle(facts)
        paragraphs.append(" ".join(facts))
    return paragraphs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_sample_data(kind: str, out_dir: Path, *, n_train: int = 320, n_val: int = 48) -> dict[str, Path]:
    """Write train/ and validation/ channels for one data format; returns the channel dirs."""
    out_dir = Path(out_dir)
    channels = {"train": out_dir / "train", "validation": out_dir / "validation"}
    for name, n, seed in (("train", n_train, 1), ("validation", n_val, 2)):
        folder = channels[name]
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "instruction":
            write_jsonl(folder / "data.jsonl", instruction_rows(n, seed))
            if name == "train":
                (folder / "template.json").write_text(json.dumps({
                    "prompt": "Below is an instruction that describes a task, paired with an input "
                              "that provides further context. Write a response that appropriately "
                              "completes the request.\n\n### Instruction:\n{instruction}\n\n"
                              "### Input:\n{context}",
                    "completion": "{response}",
                }, indent=2))
        elif kind == "chat":
            write_jsonl(folder / "dialogs.jsonl", chat_rows(n, seed))
        elif kind == "domain":
            (folder / "corpus.txt").write_text("\n".join(domain_text(n, seed)) + "\n")
        elif kind == "table":
            with open(folder / "pairs.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["input", "output"])
                for row in instruction_rows(n, seed):
                    writer.writerow([row["instruction"], row["response"]])
        else:
            raise ValueError(f"unknown sample kind {kind!r}")
    return channels


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: every sample format plus template words."""
    lines = [json.dumps(r) for r in instruction_rows(400, 7)]
    lines += domain_text(200, 8)
    lines += [q.format(item=i) for q in QUESTIONS for i in ITEMS]
    lines += ["Below is an instruction that describes a task, paired with an input that provides "
              "further context. Write a response that appropriately completes the request.",
              "### Instruction: ### Input: ### Response: <|system|> <|user|> <|assistant|>",
              "You answer in one short sentence. system user assistant role content"]
    rng = random.Random(9)
    lines += [_sentence(rng, 12) for _ in range(300)]
    return lines
