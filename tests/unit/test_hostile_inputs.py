"""Hostile inputs the training side must refuse (or step around) with a clear message."""

import json
import logging
from types import SimpleNamespace

import pytest

from tuneforge.contract import Paths
from tuneforge.job.checkpoints import commit, staging_dir
from tuneforge.job.resume import plan_resume, state_problem


# ---------------------------------------------------------------- tampered trainer_state.json
def _checkpoint(paths, step, state):
    staged = staging_dir(paths) / f"checkpoint-{step}"
    staged.mkdir(parents=True)
    (staged / "model.safetensors").write_text("w" * 10)
    if state is not None:
        text = state if isinstance(state, str) else json.dumps(state)
        (staged / "trainer_state.json").write_text(text)
    return commit(staged, paths.checkpoint_dir)


def _plan(paths):
    recipe = SimpleNamespace(paths=paths, config=SimpleNamespace(max_steps=-1),
                             args=SimpleNamespace(load_best_model_at_end=True))
    return plan_resume(recipe, {"method": "full"})


def _state(step, **changes):
    return {"global_step": step, "epoch": 1.0, "log_history": [{"loss": 1.0, "step": step}], **changes}


TAMPERED = [
    ({"log_history": "oops"}, "trainer_state.json field 'log_history' holds a string, not a list of objects"),
    ({"global_step": -5}, "trainer_state.json field 'global_step' holds a number, not a whole number >= 0"),
    ({"global_step": 3}, "trainer_state.json says global_step 3, not the folder's step 4"),
    ({"stateful_callbacks": {"TrainerControl": 1}},
     "trainer_state.json field 'stateful_callbacks' holds an object, not an object of callback states"),
    ({"evil": 1}, "trainer_state.json has fields the Trainer does not know (evil)"),
    ("not json", "trainer_state.json is not JSON"),
    ("[1, 2]", "trainer_state.json holds a list, not an object"),
    (None, "there is no trainer_state.json"),
]


@pytest.mark.parametrize("tampered,problem", TAMPERED)
def test_a_checkpoint_whose_state_does_not_parse_is_skipped_for_the_previous_one(tmp_path, caplog, tampered,
                                                                                 problem):
    paths = Paths(tmp_path)
    previous = _checkpoint(paths, 2, _state(2))
    state = _state(4, **tampered) if isinstance(tampered, dict) else tampered
    newest = _checkpoint(paths, 4, state)
    assert problem in state_problem(newest) and state_problem(previous) is None
    with caplog.at_level(logging.WARNING, logger="tuneforge.job.resume"):
        plan = _plan(paths)
    assert plan.checkpoint == previous and not plan.finished
    assert f"{newest} is not resumed from: {problem}" in caplog.text
    assert f"1 checkpoint(s) refused; resuming from {previous}" in caplog.text


def test_with_no_other_checkpoint_the_run_starts_fresh_with_a_warning(tmp_path, caplog):
    paths = Paths(tmp_path)
    newest = _checkpoint(paths, 4, _state(4, log_history="oops"))
    with caplog.at_level(logging.WARNING, logger="tuneforge.job.resume"):
        plan = _plan(paths)
    assert plan.checkpoint is None and newest.is_dir()
    assert "no other complete checkpoint: this run starts fresh" in caplog.text


def test_a_sound_state_is_resumed_as_before(tmp_path, caplog):
    paths = Paths(tmp_path)
    _checkpoint(paths, 2, _state(2))
    newest = _checkpoint(paths, 4, _state(4, best_model_checkpoint=None, stateful_callbacks={
        "TrainerControl": {"args": {}, "attributes": {}}, "EarlyStoppingCallback": [{"args": {}}]}))
    with caplog.at_level(logging.WARNING, logger="tuneforge.job.resume"):
        assert _plan(paths).checkpoint == newest
    assert "refused" not in caplog.text


# ---------------------------------------------------------------- chat templates that reach for Python
CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def _chat_example():
    from tuneforge.data.formats import Example

    return Example(source="chat.jsonl:1", messages=CHAT)


def _tokenize(tokenizer, chat_template=None):
    from tuneforge.data import tokenize_examples
    from tuneforge.data.prompt import PromptFormat

    prompt = PromptFormat(kind="chat", prompt_template="", completion_template="", chat_template=chat_template)
    return tokenize_examples([_chat_example()], tokenizer, prompt, max_len=64, max_out=16, seq2seq=False)


EVIL = "{% for m in messages %}{{ m['content'].__class__.__mro__ }}{% endfor %}"


def test_a_sandbox_refusal_in_the_chat_template_hyperparameter_names_it(tiny):
    from transformers import AutoTokenizer

    from tuneforge.errors import HyperparameterError

    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    with pytest.raises(HyperparameterError) as err:
        _tokenize(tokenizer, EVIL)
    assert str(err.value).startswith("hyperparameter chat_template: the chat template touches Python objects, which "
                                     "templates may not do (access to attribute '__class__' of 'str' object is unsafe")
    assert "no attribute that starts with _" in str(err.value)


def test_a_sandbox_refusal_in_the_model_tokenizer_names_the_file(tiny, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    from tuneforge.errors import ModelError

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny("llama") / name, tmp_path / name)
    (tmp_path / "chat_template.jinja").write_text(EVIL)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ModelError) as err:
        _tokenize(tokenizer)
    assert str(err.value).startswith(f"{tmp_path / 'chat_template.jinja'}: the chat template touches Python objects")


def test_a_chat_template_that_is_not_jinja_names_the_line(tiny):
    from transformers import AutoTokenizer

    from tuneforge.errors import HyperparameterError

    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    with pytest.raises(HyperparameterError) as err:
        _tokenize(tokenizer, "{% for m in messages %}\n{{ m['content'] }\n{% endfor %}")
    assert str(err.value).startswith("hyperparameter chat_template: the chat template is not valid Jinja (template "
                                     "line 2: ")


# ---------------------------------------------------------------- chat templates that never end
HUGE_LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"


def test_a_chat_template_that_runs_too_long_fails_naming_it_and_the_limit(tiny, monkeypatch):
    import signal
    import time

    from transformers import AutoTokenizer

    from tuneforge.data import prompt
    from tuneforge.errors import HyperparameterError

    monkeypatch.setattr(prompt, "RENDER_SECONDS", 0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    prompt.render_chat(tokenizer, CHAT, add_generation_prompt=False)  # warm: tokenizer and Jinja set up
    signal.setitimer(signal.ITIMER_REAL, 60)  # an outer timer (say, a test timeout) goes on afterwards
    start = time.monotonic()
    try:
        with pytest.raises(HyperparameterError) as err:
            _tokenize(tokenizer, HUGE_LOOP)
        remaining = signal.getitimer(signal.ITIMER_REAL)[0]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    assert time.monotonic() - start < 5 and 50 < remaining < 60
    assert str(err.value).startswith("hyperparameter chat_template: the chat template did not finish one "
                                     "conversation within the limit of 0.5 s")
    assert "Fix: make the template's loops run over the messages only" in str(err.value)


def test_a_looping_chat_template_is_stopped_in_any_thread(tiny, monkeypatch):
    """Serving renders in request threads, which receive no signals: the limit holds there too."""
    import threading
    import time

    from transformers import AutoTokenizer

    from tuneforge.data import prompt
    from tuneforge.errors import HyperparameterError

    monkeypatch.setattr(prompt, "RENDER_SECONDS", 0.5)
    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    caught = []

    def render():
        try:
            prompt.render_chat(tokenizer, CHAT, add_generation_prompt=False, chat_template=HUGE_LOOP)
        except HyperparameterError as exc:
            caught.append(exc)

    start = time.monotonic()
    worker = threading.Thread(target=render)
    worker.start()
    worker.join(30)
    assert not worker.is_alive() and time.monotonic() - start < 10
    assert "did not finish one conversation within the limit of 0.5 s" in str(caught[0])


def test_a_chat_template_whose_output_is_too_long_fails_naming_it_and_the_limit(tiny, monkeypatch):
    from transformers import AutoTokenizer

    from tuneforge.data import prompt
    from tuneforge.errors import HyperparameterError

    monkeypatch.setattr(prompt, "MAX_RENDERED_CHARS", 1000)
    tokenizer = AutoTokenizer.from_pretrained(tiny("llama"))
    with pytest.raises(HyperparameterError) as err:
        _tokenize(tokenizer, "{% for m in messages %}{{ m['content'] * 1000 }}{% endfor %}")
    assert str(err.value).startswith("hyperparameter chat_template: the chat template made 2,000 characters of one "
                                     "conversation, over the limit of 1,000 characters")


# ---------------------------------------------------------------- a model archive that holds no model
def test_an_archive_without_config_json_is_refused_by_name_before_unpacking(tmp_path):
    import tarfile

    from tuneforge.archives import extract_model_archive
    from tuneforge.errors import ModelError

    archive = tmp_path / "channel" / "model.tar.gz"
    archive.parent.mkdir()
    (tmp_path / "zeros.bin").write_bytes(bytes(4096))
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "zeros.bin", arcname="weights/zeros.bin")
    root = tmp_path / "extracted"
    with pytest.raises(ModelError) as raised:
        extract_model_archive(archive, root)
    assert str(raised.value).startswith(f"{archive}: the archive holds no config.json, so it is not a model folder "
                                        "(its files: 'weights/zeros.bin'); nothing was unpacked. Fix: pack the model")
    assert "pid-" not in str(raised.value)
    assert not root.exists() or list(root.rglob("*")) == []  # nothing unpacked, no pid-... folder left


def test_an_archive_with_config_json_in_a_subfolder_is_unpacked(tmp_path):
    import tarfile

    from tuneforge.archives import cleanup, extract_model_archive

    (tmp_path / "config.json").write_text("{}")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "config.json", arcname="my-model/config.json")
    try:
        target = extract_model_archive(archive, tmp_path / "extracted")
        assert (target / "my-model" / "config.json").read_text() == "{}"
    finally:
        cleanup()


# ---------------------------------------------------------------- validation rows that are training rows
def _examples(pairs, file="rows.jsonl"):
    from tuneforge.data import Example

    return [Example(source=f"{file}:{n}", prompt=p, completion=c) for n, (p, c) in enumerate(pairs, 1)]


def test_validation_rows_that_are_all_training_rows_are_named():
    from tuneforge.data import validation_overlap

    rows = [(f"q{i}", f"a{i}") for i in range(8)]
    overlap = validation_overlap(_examples(rows), _examples(rows[::-1], "val.jsonl"))
    assert overlap["rows"] == overlap["of"] == 8 and overlap["share"] == 1.0
    assert overlap["note"].startswith("every validation row is also in the training data: the validation loss, "
                                      "perplexity and ROUGE then measure how well training rows were memorised, "
                                      "not how the model does on unseen data (generalisation)")
    assert overlap["first"] == ["val.jsonl:1", "val.jsonl:2", "val.jsonl:3"]


def test_a_partial_overlap_gives_the_count_and_share():
    from tuneforge.data import validation_overlap

    train = _examples([(f"q{i}", f"a{i}") for i in range(8)])
    validation = _examples([("q1", "a1"), ("q2", "other answer"), ("q3", "a3"), ("new", "a")], "val.jsonl")
    overlap = validation_overlap(train, validation)
    assert overlap["note"].startswith("2 of 4 validation rows (50%) are also in the training data")
    assert overlap["first"] == ["val.jsonl:1", "val.jsonl:3"]
    assert validation_overlap(train, validation[3:]) is None  # nothing shared: no note


def test_the_run_report_warns_of_the_overlap(tmp_path):
    from tests.unit.test_report import METRICS, write_job
    from tuneforge.report import write_report

    note = "3 of 8 validation rows (38%) are also in the training data: ... (generalisation)"
    base = write_job(tmp_path / "job" / "opt" / "ml", {**METRICS, "validation_overlap": {"rows": 3, "of": 8,
                                                                                        "note": note}})
    html_path, md_path = write_report(base)
    assert f'<p class="warning">Warning: {note}.</p>' in html_path.read_text()
    assert md_path.read_text().count(f"**Warning: {note}.**") == 2  # beside the before/after table and the data


# ---------------------------------------------------------------- a full disk while checkpointing
def test_a_checkpoint_write_that_ran_out_of_disk_is_a_resource_error(tmp_path):
    from tuneforge.errors import ResourceError
    from tuneforge.job.checkpoints import disk_full_error

    paths = Paths(tmp_path / "opt" / "ml")
    _checkpoint(paths, 2, _state(2))
    staged = staging_dir(paths) / "checkpoint-4"
    staged.mkdir()
    (staged / "model.safetensors").write_text("half")
    # torch.save says only "file write failed": a disk with less free space than the checkpoint takes
    torch_save = RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file "
                              "data/0: file write failed")
    assert disk_full_error(torch_save, staged, paths.checkpoint_dir, 1, keep=2) is None
    error = disk_full_error(torch_save, staged, paths.checkpoint_dir, 2**60, keep=2)
    assert isinstance(error, ResourceError) and not staged.exists()
    assert str(error).startswith(f"{paths.checkpoint_dir}: no space left while writing checkpoint-4 ([enforce fail")
    assert f"a checkpoint takes about {2**30:.2f} GiB and " in str(error)
    assert "takes about 0.5 MiB and" in str(disk_full_error(OSError(28, "No space left on device"), staged,
                                                             paths.checkpoint_dir, 2**19, keep=2))
    assert f"{paths.checkpoint_dir / 'checkpoint-2'} (the last complete one) is kept for resume" in str(error)
    assert disk_full_error(ValueError("No space left on device"), staged, paths.checkpoint_dir, 1, keep=2) is not None
    assert disk_full_error(ValueError("bad value"), staged, paths.checkpoint_dir, 1, keep=2) is None
    assert disk_full_error(error, staged, paths.checkpoint_dir, 1, keep=2) is None  # already the user's error
