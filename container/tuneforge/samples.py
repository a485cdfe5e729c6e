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


# The real-model task (make demo, the slow quality test): route a support ticket to one team,
# answering with the team's name alone. A pretrained chat model understands the tickets but not
# this label set or the one-word answer; a short fine-tune teaches both.
TEAMS = {
    "billing": ["I was charged twice for my {plan} subscription this month.",
                "Why does my invoice show {amount} when my plan costs less?",
                "Please refund the {amount} you took from my card by mistake.",
                "My credit card payment for the {plan} plan was declined but I was still billed.",
                "Can I get a receipt for the {amount} payment I made on {day}?",
                "The discount code was not applied and I paid the full {amount}."],
    "shipping": ["My {item} order has not arrived and it was due on {day}.",
                 "The tracking number for my {item} has not updated for a week.",
                 "The box with my {item} arrived crushed and the contents are broken.",
                 "Can you send my {item} to a different address? I moved on {day}.",
                 "I received someone else's parcel instead of my {item}.",
                 "How long does delivery of a {item} take to my town?"],
    "technical": ["The app crashes every time I open the {feature} screen.",
                  "I get error {code} when I try to upload a file.",
                  "The {feature} page has been loading forever since {day}.",
                  "Sync stopped working on my phone after the last update, error {code}.",
                  "The {feature} button does nothing when I click it in the browser.",
                  "Notifications from the {feature} section never reach my laptop."],
    "account": ["I forgot my password and the reset email never comes.",
                "Please change the email address on my account to my work address.",
                "How do I delete my account and all my data?",
                "Someone logged into my account from another country on {day}.",
                "I want to add a second user to my {plan} account.",
                "My username is wrong, can you rename it before {day}?"],
}
TICKET_SLOTS = {
    "plan": ["Basic", "Pro", "Family", "Business", "Premium"],
    "amount": ["$19.99", "$45", "$120", "$7.50", "$260"],
    "day": ["Monday", "Tuesday", "Friday", "the 3rd", "March 12", "last weekend"],
    "item": ["desk lamp", "phone case", "coffee grinder", "backpack", "monitor", "bookshelf"],
    "feature": ["settings", "calendar", "reports", "billing", "profile", "dashboard"],
    "code": ["E102", "500", "SYNC-7", "0x80070005", "403", "TIMEOUT"],
}
TICKET_INSTRUCTION = "Route this support ticket to one team: billing, shipping, technical or account. Answer with the team name only."


# Replay: general questions answered in full sentences, mixed into the ticket data so the model
# learns "one word for tickets" without learning "one word for everything". None of them is a
# question of the general-knowledge check (llm/knowledge.py), which measures what is kept.
GENERAL_ROWS = [
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("What is the capital of Portugal?", "The capital of Portugal is Lisbon."),
    ("What is 4 + 4?", "4 + 4 = 8."),
    ("What is 9 minus 3?", "9 minus 3 is 6."),
    ("What is 3 times 3?", "3 times 3 is 9."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("How many months are in a year?", "There are 12 months in a year."),
    ("What color is grass?", "Grass is green."),
    ("What is the closest star to Earth?", "The closest star to Earth is the Sun."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What do cows give us to drink?", "Cows give us milk."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("What gas do plants take in from the air?", "Plants take in carbon dioxide from the air."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
]


# How `make demo` and the slow real-model test fine-tune SmolLM2-135M-Instruct on the tickets
# (64 train rows + 16 replay rows, 16 validation rows): full fine-tuning learns the task in 20
# steps and, with the replay rows, keeps the general answers (docs/benchmarks.md has the numbers).
TICKETS_HYPERPARAMETERS = {
    "chat_dataset": "True", "peft_type": "none", "epoch": "2", "learning_rate": "1e-4",
    "lr_scheduler_type": "constant", "per_device_train_batch_size": "8", "evaluation_strategy": "no",
    "load_best_model_at_end": "False", "rouge_samples": "16", "max_output_length": "8", "logging_steps": "4",
}


def ticket_rows(n: int, seed: int, *, replay_share: float = 0.0) -> list[dict]:
    """Chat rows: the ticket in the user turn, the team alone in the assistant turn; with
    `replay_share`, that share of extra rows are general questions answered in full sentences."""
    rng = random.Random(seed)
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in rng.sample(GENERAL_ROWS, min(len(GENERAL_ROWS), round(n * replay_share)))]
    for index in range(n):
        team = sorted(TEAMS)[index % len(TEAMS)]
        text = rng.choice(TEAMS[team]).format(**{k: rng.choice(v) for k, v in TICKET_SLOTS.items()})
        rows.append({"messages": [{"role": "user", "content": f"{TICKET_INSTRUCTION}\n\nTicket: {text}"},
                                  {"role": "assistant", "content": team}]})
    rng.shuffle(rows)
    return rows


# Preference pairs on the same tickets (the SmolLM2 DPO test, docs/preference.md): the chosen answer
# is the team's name alone, the rejected one what SmolLM2-135M-Instruct itself answers to the
# ticket (greedy, 24 tokens: chatty, often off the task), bundled in ticket_answers.py. DPO on them
# teaches the form of the answer the base lacks.
TICKET_PREFERENCE_SETS = {"train": (64, 1), "validation": (16, 2)}  # split -> (tickets, ticket_rows seed)
TICKETS_DPO_HYPERPARAMETERS = {
    "training_method": "dpo", "learning_rate": "5e-4", "max_steps": "12", "per_device_train_batch_size": "8",
    "lr_scheduler_type": "constant", "evaluation_strategy": "no", "load_best_model_at_end": "False",
    "rouge_samples": "16", "max_output_length": "8", "logging_steps": "4",
}


def ticket_preference_rows(split: str, n: int | None = None) -> list[dict]:
    """Conversational pairs of one split: the ticket in the user turn; chosen = the team, rejected =
    the base model's own answer."""
    from .ticket_answers import BASE_ANSWERS

    count, seed = TICKET_PREFERENCE_SETS[split]
    rows = []
    for row, answer in zip(ticket_rows(count, seed)[:n], BASE_ANSWERS[split]):
        user, team = row["messages"]
        rows.append({"chosen": [user, team], "rejected": [user, {"role": "assistant", "content": answer}]})
    return rows


def ticket_task(n: int, seed: int) -> list[dict]:
    """Tickets the job never trains on, as generation items: the user turn and the team to answer."""
    return [{"messages": row["messages"][:1], "reference": row["messages"][1]["content"]}
            for row in ticket_rows(n, seed)]


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
    """Write train/ and validation/ channels for one data format (tickets: an evaluation/ task too);
    returns the channel dirs."""
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
        elif kind == "tickets":  # the real model's task; general questions mixed into training only
            write_jsonl(folder / "tickets.jsonl", ticket_rows(n, seed, replay_share=0.25 if name == "train" else 0.0))
            if name == "validation":  # held-out tickets as an evaluation task (docs/evaluation.md)
                channels["evaluation"] = out_dir / "evaluation"
                write_jsonl(channels["evaluation"] / "tickets.jsonl", ticket_task(n_val, seed=3))
        elif kind == "ticket-preferences":  # the SmolLM2 DPO test's pairs (at most the bundled counts)
            write_jsonl(folder / "pairs.jsonl", ticket_preference_rows(name, n))
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
