"""Constrained decoding in the engine: complete answers within the token budget, mixed batches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tuneforge.serve.engine import Engine, GenerationRequest, Sampling
from tuneforge.serve.guided import compile_plan, regex_for_schema
from tuneforge.serve.settings import ServeSettings

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"]}


@pytest.fixture(scope="module")
def engine(tiny):
    import torch

    from tuneforge.serve.loader import load_model

    torch.set_num_threads(1)
    settings = ServeSettings(model_dir=Path(tiny("llama")))
    engine = Engine(load_model(settings), settings)
    yield engine
    engine.close()


def _plan(engine, regex: str):
    return compile_plan(regex, engine.tokenizer, engine.loaded.eos_token_ids[0])


def test_a_schema_is_always_completed_within_the_budget(engine):
    plan = _plan(engine, regex_for_schema(SCHEMA))
    least = plan.fewest_tokens()
    assert 5 < least < 40
    for seed, budget in enumerate([least, least + 1, least + 7, 48, 48, 48]):
        sampling = Sampling(do_sample=True, temperature=1.5, seed=seed)
        result = engine.submit(GenerationRequest([1, 40, 41], budget, sampling, guide=plan)).wait(60)
        sequence = result.sequences[0]
        answer = json.loads(sequence.text)
        assert set(answer) == {"name", "age", "tags"} and isinstance(answer["age"], int)
        assert len(sequence.tokens) <= budget and sequence.finish_reason == "eos_token"


def test_guided_and_free_rows_share_a_batch(engine):
    plan = _plan(engine, "(yes|no|maybe)")
    free = engine.submit(GenerationRequest([1, 50, 51], 6))
    guided = [engine.submit(GenerationRequest([1, 50 + i, 51], 6, guide=plan)) for i in range(3)]
    alone = engine.submit(GenerationRequest([1, 50, 51], 6)).wait(60)
    assert free.wait(60).sequences[0].text == alone.sequences[0].text  # the mask touched only its own rows
    for job in guided:
        assert re.fullmatch("yes|no|maybe", job.wait(60).sequences[0].text)
