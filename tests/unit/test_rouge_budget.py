"""ROUGE generation stops starting batches once its time budget has run out."""

import types

import pytest


@pytest.fixture(scope="module")
def recipe(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.config import parse_hyperparameters
    from tuneforge.llm.recipe import Recipe

    path = tiny("llama")
    recipe = Recipe.__new__(Recipe)
    recipe.config = parse_hyperparameters({"per_device_train_batch_size": "8"})
    recipe.trainer = None
    tokenizer = AutoTokenizer.from_pretrained(path)
    recipe.prepared = types.SimpleNamespace(
        data=types.SimpleNamespace(tokenizer=tokenizer, max_len=64), engine=types.SimpleNamespace(ds_config=None),
        model=types.SimpleNamespace(loaded=types.SimpleNamespace(seq2seq=False),
                                    module=AutoModelForCausalLM.from_pretrained(path)))
    recipe._generation_ranks = lambda: "main"
    return recipe


PROMPTS = [f"question {i}:" for i in range(20)]


def test_without_a_deadline_every_prompt_is_answered(recipe):
    assert len(recipe._greedy_answers(PROMPTS, 2)) == 20


def test_no_batch_starts_after_the_deadline(recipe, monkeypatch):
    import time

    from tuneforge.llm import recipe as recipe_module

    assert recipe._greedy_answers(PROMPTS, 2, deadline=time.monotonic() - 1) == []
    clock = iter([0.0, 10.0, 10.0])  # the first batch starts in time; the second check is late
    monkeypatch.setattr(recipe_module.time, "monotonic", lambda: next(clock))
    assert len(recipe._greedy_answers(PROMPTS, 2, deadline=5.0)) == 8
