"""Preference pairs (data/preference.py): detected like the other formats, bad rows named by
file:line with the fix, and a format refused for a training method that cannot use it."""

import json

import pytest

from tuneforge.config import parse_hyperparameters
from tuneforge.data import read_channel
from tuneforge.errors import DataError

DPO = {"training_method": "dpo"}
TURNS = [{"role": "user", "content": "Hi"}]


def _channel(tmp_path, rows, name="pairs.jsonl"):
    folder = tmp_path / "train"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _read(tmp_path, rows, hyperparameters=DPO):
    return read_channel(_channel(tmp_path, rows), parse_hyperparameters(hyperparameters))


def test_text_pairs_are_detected_and_read(tmp_path):
    data = _read(tmp_path, [{"prompt": "Sky?", "chosen": "Blue.", "rejected": "Red."}] * 2)
    assert data.format == "preference" and len(data.examples) == 2
    pair = data.examples[0]
    assert (pair.prompt, pair.completion, pair.rejected, pair.conversational) == ("Sky?", "Blue.", "Red.", False)
    assert data.prompt.kind == "instruction" and data.prompt.render_text("Sky?") == "Sky?\n\n### Response:\n"


def test_conversation_pairs_keep_the_shared_turns(tmp_path):
    row = {"chosen": TURNS + [{"role": "assistant", "content": "Hello!"}],
           "rejected": TURNS + [{"role": "assistant", "content": "What."}]}
    data = _read(tmp_path, [row])
    pair = data.examples[0]
    assert data.prompt.kind == "chat" and pair.conversational and pair.messages == TURNS
    assert (pair.chosen_turn["content"], pair.rejected_turn["content"]) == ("Hello!", "What.")


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "'chosen' and 'rejected' are the same answer"),
    ({"prompt": "p", "chosen": "a"}, "the row has no 'rejected'"),
    ({"prompt": "p", "chosen": " ", "rejected": "b"}, "'chosen' is empty"),
    ({"chosen": "a", "rejected": "b"}, "the row has no 'prompt'"),
    ({"chosen": TURNS + [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "Other"}, {"role": "assistant", "content": "b"}]},
     "differ before their last assistant turn"),
    ({"chosen": TURNS + [{"role": "assistant", "content": ""}],
      "rejected": TURNS + [{"role": "assistant", "content": "b"}]}, "the last assistant turn of 'chosen' is empty"),
])
def test_a_bad_row_is_named_by_file_and_line(tmp_path, row, message):
    good = {"prompt": "p", "chosen": "a", "rejected": "b"} if isinstance(row.get("chosen"), str) or "prompt" in row \
        else {"chosen": TURNS + [{"role": "assistant", "content": "a"}], "rejected": TURNS + [{"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError) as caught:
        _read(tmp_path, [good, good, row])
    text = str(caught.value)
    assert message in text and "pairs.jsonl:3" in text and "Fix:" in text, text


def test_preference_rows_are_refused_for_sft_naming_dpo(tmp_path):
    with pytest.raises(DataError) as caught:
        _read(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b"}], {})
    assert "training_method=sft cannot train on" in str(caught.value)
    assert "set training_method=dpo" in str(caught.value)


@pytest.mark.parametrize("hyperparameters, row, fmt", [
    ({"instruction_tuned": "True"}, {"prompt": "p", "completion": "c"}, "instruction"),
    ({}, {"messages": TURNS + [{"role": "assistant", "content": "a"}]}, "domain"),
])
def test_sft_rows_are_refused_for_dpo_naming_sft(tmp_path, hyperparameters, row, fmt):
    with pytest.raises(DataError) as caught:
        _read(tmp_path, [row], {**DPO, **hyperparameters})
    text = str(caught.value)
    assert f"training_method=dpo needs preference pairs (chosen/rejected) and the channel holds {fmt} data" in text
    assert "set training_method=sft" in text


def test_mixed_shapes_stop_at_the_first_row_of_the_other_shape(tmp_path):
    text = {"prompt": "p", "chosen": "a", "rejected": "b"}
    chat = {"chosen": TURNS + [{"role": "assistant", "content": "a"}], "rejected": TURNS + [{"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError, match="pairs.jsonl:2.*mix text rows and conversations"):
        _read(tmp_path, [text, chat])


def test_preference_hyperparameters_are_declared_with_ranges_and_did_you_mean():
    from tuneforge.errors import HyperparameterError

    config = parse_hyperparameters({"training_method": "dpo", "loss_type": "ipo", "label_smoothing": "0.1"})
    assert (config.beta, config.dpo_loss_type, config.label_smoothing) == (0.1, "ipo", 0.1)
    assert parse_hyperparameters({}).training_method == "sft"
    for raw, message in (({"training_metod": "dpo"}, "did you mean 'training_method'"),
                         ({"training_method": "ppo"}, "use one of sft, dpo, orpo, simpo, kto"),
                         ({"beta": "0"}, "out of range"), ({"label_smoothing": "0.5"}, "<= 0.49"),
                         ({"training_method": "dpo", "loss_type": "exo_pair"}, "exo_pair needs label_smoothing > 0")):
        with pytest.raises(HyperparameterError, match=message):
            parse_hyperparameters(raw)


UNPAIRED = [{"prompt": "Sky?", "completion": "Blue.", "label": True}, {"prompt": "Sky?", "completion": "Red.", "label": False}]


def test_unpaired_rows_are_detected_and_read_for_kto(tmp_path):
    data = _read(tmp_path, UNPAIRED, {"training_method": "kto"})
    assert data.format == "unpaired" and [e.label for e in data.examples] == [True, False]
    assert data.examples[1].completion == "Red." and data.prompt.kind == "instruction"


@pytest.mark.parametrize("row, message", [
    ({"prompt": "p", "completion": "c", "label": "yes"}, "'label' must be true or false"),
    ({"prompt": "p", "completion": " ", "label": False}, "'completion' is empty"),
])
def test_a_bad_unpaired_row_is_named_by_file_and_line(tmp_path, row, message):
    with pytest.raises(DataError) as caught:
        _read(tmp_path, UNPAIRED + [row], {"training_method": "kto"})
    assert message in str(caught.value) and "pairs.jsonl:3" in str(caught.value)


@pytest.mark.parametrize("rows, method, message", [
    (UNPAIRED, "dpo", "the rows are unpaired rows (prompt/completion/label), which training_method=dpo cannot train on. "
                      "Fix: set training_method=kto"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}], "kto",
     "the rows are preference pairs (chosen/rejected), which training_method=kto cannot train on. Fix: set "
     "training_method=dpo or training_method=orpo or training_method=simpo"),
    (UNPAIRED, "sft", "which training_method=sft cannot train on. Fix: set training_method=kto"),
    ([{"prompt": "p", "completion": "c"}], "kto", "training_method=kto needs unpaired rows (prompt/completion/label) "
                                                  "and the channel holds domain data, which training_method=sft"),
])
def test_each_format_is_refused_for_a_method_that_cannot_use_it_naming_one_that_can(tmp_path, rows, method, message):
    with pytest.raises(DataError) as caught:
        _read(tmp_path, rows, {"training_method": method})
    assert message in str(caught.value), str(caught.value)


@pytest.mark.parametrize("method", ["orpo", "simpo"])
def test_orpo_and_simpo_read_preference_pairs(tmp_path, method):
    data = _read(tmp_path, [{"prompt": "p", "chosen": "a", "rejected": "b"}], {"training_method": method})
    assert data.format == "preference"


def test_conversation_pairs_render_as_sft_chat_renders_the_same_conversation(tmp_path):
    """The prompt and each answer are the pieces chat fine-tuning trains on (prompt.chat_segments),
    the template's EOS ending the answer (TRL adds none after it)."""
    from transformers import AutoTokenizer

    from tuneforge.data.prompt import chat_segments
    from tuneforge.tiny import tiny_model
    from tuneforge.llm.preference_data import render_pair

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llama"))
    system = [{"role": "system", "content": "Be brief."}]
    row = {"chosen": system + TURNS + [{"role": "assistant", "content": "Hello!"}],
           "rejected": system + TURNS + [{"role": "assistant", "content": "What."}]}
    data = _read(tmp_path, [row])
    rendered = render_pair(data.examples[0], tokenizer, data.prompt)
    for key in ("chosen", "rejected"):
        segments = chat_segments(tokenizer, row[key])
        assert rendered["prompt"] == "".join(text for text, trainable in segments if not trainable)
        assert rendered[key] == segments[-1][0].rstrip() and rendered[key].endswith(tokenizer.eos_token)


CHAT_UNPAIRED = [{"prompt": TURNS, "completion": [{"role": "assistant", "content": answer}], "label": label}
                 for answer, label in (("Hello!", True), ("What.", False))]


def test_conversational_unpaired_rows_render_as_sft_chat_renders_them(tmp_path):
    """KTO's conversational rows ({"prompt": [turns], "completion": [assistant turn], "label"}): chat
    prompt format, the prompt and answer the pieces chat fine-tuning trains on."""
    from transformers import AutoTokenizer

    from tuneforge.data.prompt import chat_segments
    from tuneforge.tiny import tiny_model
    from tuneforge.llm.preference_data import render_pair

    tokenizer = AutoTokenizer.from_pretrained(tiny_model("llama"))
    data = _read(tmp_path, CHAT_UNPAIRED, {"training_method": "kto"})
    assert data.format == "unpaired" and data.prompt.kind == "chat" and [e.label for e in data.examples] == [True, False]
    for example, row in zip(data.examples, CHAT_UNPAIRED):
        rendered = render_pair(example, tokenizer, data.prompt)
        segments = chat_segments(tokenizer, row["prompt"] + row["completion"])
        assert rendered["prompt"] == "".join(text for text, trainable in segments if not trainable)
        assert rendered["completion"] == segments[-1][0].rstrip() and rendered["label"] is row["label"]
        assert set(rendered) == {"prompt", "completion", "label", "source"}


@pytest.mark.parametrize("row, message", [
    ({"prompt": TURNS, "completion": "Hello", "label": True}, "'completion' as a list of the one assistant turn"),
    ({"prompt": TURNS, "completion": [{"role": "user", "content": "x"}], "label": True}, "one assistant turn"),
    ({"prompt": "Hi", "completion": "Hello", "label": True}, "the rows mix text rows and conversations"),
])
def test_a_bad_conversational_unpaired_row_is_named_by_file_and_line(tmp_path, row, message):
    with pytest.raises(DataError) as caught:
        _read(tmp_path, CHAT_UNPAIRED + [row], {"training_method": "kto"})
    assert message in str(caught.value) and "pairs.jsonl:3" in str(caught.value), str(caught.value)


def test_kto_weights_are_declared_and_reach_trls_config(tmp_path):
    from transformers import TrainingArguments

    from tuneforge.errors import HyperparameterError
    from tuneforge.llm.preference_methods import method_trainer

    config = parse_hyperparameters({"training_method": "kto", "kto_desirable_weight": "1.33"})
    _, kto = method_trainer(config, TrainingArguments(output_dir=str(tmp_path), report_to=[]), 64)
    assert (kto.desirable_weight, kto.undesirable_weight) == (1.33, 1.0)
    with pytest.raises(HyperparameterError, match="out of range"):
        parse_hyperparameters({"kto_undesirable_weight": "0"})


def test_check_job_refuses_unpaired_rows_for_sft_before_any_model_loads(tmp_path):
    """`tuneforge check-job` (run by the train image before the job) reads the channels as the job does."""
    import subprocess
    import sys

    base = tmp_path / "opt" / "ml"
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({"epoch": "1"}))
    channel = base / "input" / "data" / "train"
    channel.mkdir(parents=True)
    (channel / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in UNPAIRED))
    done = subprocess.run([sys.executable, "-m", "tuneforge.cli", "check-job", "--base-dir", str(base)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    first = (base / "output" / "failure").read_text().splitlines()[0]
    assert "which training_method=sft cannot train on. Fix: set training_method=kto" in first, first


def test_a_template_json_renders_text_pair_prompts_as_instruction_tuning_does(tmp_path):
    from tuneforge.data.prompt import PromptFormat

    rows = [{"question": "Sky?", "context": "Look up.", "chosen": "Blue.", "rejected": "Red."}]
    folder = _channel(tmp_path, rows)
    template = {"prompt": "Q: {question}\nContext: {context}", "completion": "{answer}"}
    (folder / "template.json").write_text(json.dumps(template))
    data = read_channel(folder, parse_hyperparameters(DPO))
    expected = PromptFormat(kind="instruction", prompt_template=template["prompt"],
                            demarcation="\n\n### Response:\n").render_prompt(rows[0])
    assert data.examples[0].prompt == expected == "Q: Sky?\nContext: Look up.\n\n### Response:\n"
    assert data.prompt.prompt_template == template["prompt"]
    from tuneforge.llm.preference_data import render_pair

    assert render_pair(data.examples[0], None, data.prompt)["prompt"] == expected  # not rendered twice
    (folder / "pairs.jsonl").write_text(json.dumps({"question": "Sky?", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match="pairs.jsonl:1.*no field 'context', which template.json names"):
        read_channel(folder, parse_hyperparameters(DPO))


def test_the_bundled_ticket_pairs_are_valid_conversational_preference_data(tmp_path):
    """tuneforge sample-data --kind ticket-preferences: the team's name alone chosen over the base
    model's own answer (bundled in ticket_answers.py), for every bundled ticket."""
    from tuneforge.samples import TEAMS, write_sample_data

    channels = write_sample_data("ticket-preferences", tmp_path, n_train=64, n_val=16)
    for split, count in (("train", 64), ("validation", 16)):
        data = read_channel(channels[split], parse_hyperparameters(DPO))
        assert data.format == "preference" and len(data.examples) == count
        assert all(e.conversational and e.completion in TEAMS and e.rejected.strip() not in TEAMS for e in data.examples)
