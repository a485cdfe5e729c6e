"""In-process checks of the pieces: settings, metrics text, the engine's failure handling."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.errors import UserError
from tuneforge.serve.engine import Engine, GenerationFailed, GenerationRequest, Sampling
from tuneforge.serve.gunicorn_conf import config
from tuneforge.serve.metrics import ServeMetrics
from tuneforge.serve.settings import ServeSettings


def test_settings_come_from_sagemaker_and_tuneforge_variables(tmp_path):
    env = {"SM_MODEL_DIR": str(tmp_path), "SAGEMAKER_BIND_TO_PORT": "9090", "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
           "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
           "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "TUNEFORGE_MAX_BATCH_SIZE": "1", "TUNEFORGE_TRUST_REMOTE_CODE": "False"}
    settings = ServeSettings.from_env(env)
    assert settings.port == 9090 and settings.workers == 2 and settings.timeout == 120
    assert settings.max_body_bytes == 20 * 1024 * 1024 and settings.log_level == "info"
    assert settings.max_batch_size == 1 and settings.trust_remote_code is False
    assert settings.graceful_timeout < 30 and settings.request_deadline < 60
    options = config(settings.with_overrides(host="127.0.0.1"))
    assert options["bind"] == ["127.0.0.1:9090"] and options["worker_class"].__name__ == "TuneforgeWorker"
    assert options["workers"] == 2 and options["timeout"] == 120 and options["preload_app"] is False
    assert options["control_socket_disable"] is True


def test_batch_transform_gets_a_longer_deadline():
    assert ServeSettings.from_env({}).request_deadline == 55
    assert ServeSettings.from_env({"SAGEMAKER_BATCH": "true"}).request_deadline == 590
    assert ServeSettings.from_env({"SAGEMAKER_BATCH": "true", "TUNEFORGE_REQUEST_DEADLINE": "100"}).request_deadline == 100


def test_settings_explain_bad_values():
    with pytest.raises(UserError, match="TUNEFORGE_THREADS='lots'.*positive int"):
        ServeSettings.from_env({"TUNEFORGE_THREADS": "lots"})
    with pytest.raises(UserError, match="TUNEFORGE_DEVICE='tpu'"):
        ServeSettings.from_env({"TUNEFORGE_DEVICE": "tpu"})


def test_metrics_render_prometheus_text():
    metrics = ServeMetrics(queue_depth=lambda: 3, ready=lambda: True)
    metrics.requests.inc(route="/invocations", status=200)
    metrics.requests.inc(route="/invocations", status=200)
    metrics.duration.observe(0.02, route="/invocations")
    metrics.duration.observe(7, route="/invocations")
    text = metrics.render()
    assert 'tuneforge_request_count_total{route="/invocations",status="200"} 2.0' in text
    assert 'tuneforge_request_duration_seconds_bucket{le="0.025",route="/invocations"} 1.0' in text
    assert 'tuneforge_request_duration_seconds_bucket{le="10.0",route="/invocations"} 2.0' in text
    assert 'tuneforge_request_duration_seconds_count{route="/invocations"} 2.0' in text
    assert "tuneforge_queue_size 3.0" in text and "tuneforge_model_ready 1.0" in text
    assert ServeMetrics().render().count("tuneforge_request_count_total{") == 0  # each keeps its own registry


def test_seeded_sampling_never_shares_a_batch():
    greedy, sampled = Sampling(), Sampling(do_sample=True, temperature=0.7)
    assert greedy.batch_key(1) == greedy.batch_key(2)
    assert sampled.batch_key(1) == sampled.batch_key(2)
    seeded = Sampling(do_sample=True, temperature=0.7, seed=5)
    assert seeded.batch_key(1) != seeded.batch_key(2)


@pytest.fixture(scope="module")
def engine(tiny):
    import torch

    from tuneforge.serve.loader import load_model

    torch.set_num_threads(1)
    settings = ServeSettings(model_dir=Path(tiny("llama")))
    engine = Engine(load_model(settings), settings)
    yield engine
    engine.close()


def test_a_failing_generate_is_reported_and_the_engine_goes_on(engine):
    vocab = engine.model.get_input_embeddings().weight.shape[0]
    bad = engine.submit(GenerationRequest([1, vocab + 5], 4))  # id past the embedding table
    with pytest.raises(GenerationFailed, match="generation failed: IndexError"):
        bad.wait(30)
    good = engine.submit(GenerationRequest([1, 10, 11], 4)).wait(30)
    assert len(good.sequences[0].tokens) == 4


def test_n_sequences_and_per_request_lengths_in_one_batch(engine):
    jobs = [engine.submit(GenerationRequest([1, 10 + i, 11], 3 + i, n=2)) for i in range(3)]
    results = [job.wait(30) for job in jobs]
    for i, result in enumerate(results):
        assert [len(s.tokens) for s in result.sequences] == [3 + i] * 2
        assert [s.index for s in result.sequences] == [0, 1]


def test_request_frame_finds_the_end_of_each_request():
    from tuneforge.serve.worker import (COMPLETE, HEADERS_TOO_LARGE, MALFORMED, NEED_MORE, TOO_LARGE,
                                        RequestFrame)

    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\n"
    frame = RequestFrame(100)
    assert frame.feed(head + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\nab") == NEED_MORE
    assert frame.expect_continue and frame.waits_for_body
    assert frame.feed(b"cdeGET /next") == COMPLETE and frame.end == len(frame.buf) - len(b"GET /next")
    assert RequestFrame(100).feed(b"\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n") == COMPLETE  # no body
    assert RequestFrame(100).feed(head + b"Content-Length: 101\r\n\r\n") == TOO_LARGE
    chunked = RequestFrame(100)
    assert chunked.feed(head + b"Transfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n") == NEED_MORE
    assert chunked.feed(b"0\r\nX-Trailer: 1\r\n") == NEED_MORE
    assert chunked.feed(b"\r\n") == COMPLETE and chunked.end == len(chunked.buf)
    assert RequestFrame(6).feed(head + b"Transfer-Encoding: chunked\r\n\r\n7\r\n") == TOO_LARGE
    assert RequestFrame(100).feed(head + b"Transfer-Encoding: chunked\r\n\r\n0x4\r\nabcd\r\n") == MALFORMED
    assert RequestFrame(100).feed(head + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n") == MALFORMED
    # framing gunicorn refuses from the headers alone goes to it at once, with no body wait
    assert RequestFrame(100).feed(head + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n") == COMPLETE
    assert RequestFrame(100).feed(head + b"Transfer-Encoding: gzip\r\n\r\n") == COMPLETE
    assert RequestFrame(100).feed(head + b"X: " + b"a" * 70000) == HEADERS_TOO_LARGE


BAD_VARIABLES = [
    ("TUNEFORGE_DTYPE", "fp8", "one of auto, float32, bfloat16, float16, fp32, bf16, fp16"),
    ("TUNEFORGE_REQUEST_DEADLINE", "nan", "a positive number"),
    ("TUNEFORGE_MAX_BODY_MB", "inf", "a positive number"),
    ("SAGEMAKER_BIND_TO_PORT", "70000", "an integer from 1 to 65535"),
    ("SAGEMAKER_MODEL_SERVER_WORKERS", "0", "a positive integer"),
    ("SAGEMAKER_CONTAINER_LOG_LEVEL", "verbose", "one of debug, info, warning, warn, error, critical"),
    ("SAGEMAKER_BATCH", "maybe", "true or false"),
    ("TUNEFORGE_TRUST_REMOTE_CODE", "perhaps", "true or false"),
    ("TUNEFORGE_DEVICE", "tpu", "auto, cpu, cuda or cuda:N"),
    ("TUNEFORGE_MAX_STOP_SEQUENCE_CHARS", "-1", "a positive integer"),
    ("TUNEFORGE_REQUEST_READ_TIMEOUT", "soon", "a positive number"),
]


@pytest.mark.parametrize("var,value,allowed", BAD_VARIABLES, ids=[v[0] for v in BAD_VARIABLES])
def test_a_bad_serving_variable_names_itself_its_value_and_the_allowed_values(var, value, allowed):
    with pytest.raises(UserError) as caught:
        ServeSettings.from_env({var: value})
    assert str(caught.value).startswith(f"{var}={value!r} is not a valid value. Fix: set {var} to {allowed}")


def test_serve_exits_at_start_on_a_bad_dtype(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, TUNEFORGE_DTYPE="fp8")
    done = subprocess.run([sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(tmp_path), "--check"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == ("serve: TUNEFORGE_DTYPE='fp8' is not a valid value. Fix: set TUNEFORGE_"
                                           "DTYPE to one of auto, float32, bfloat16, float16, fp32, bf16, fp16")


def test_serve_refuses_at_once_a_port_another_process_listens_on(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(tmp_path),
                               "--host", "127.0.0.1", "--port", str(port)],
                              env=dict(os.environ, SERVING_ENGINE="transformers"), capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"serve: cannot serve on 127.0.0.1:{port}: Address already in use; another process holds that port "
        "(stop it, or choose another port with --port or SAGEMAKER_BIND_TO_PORT)")


def test_dtype_aliases_and_zero_batch_wait_are_accepted():
    settings = ServeSettings.from_env({"TUNEFORGE_DTYPE": "BF16", "TUNEFORGE_MAX_BATCH_WAIT_MS": "0",
                                       "SAGEMAKER_CONTAINER_LOG_LEVEL": "30", "TUNEFORGE_DEVICE": "cuda:1"})
    assert (settings.dtype, settings.max_batch_wait_ms, settings.log_level, settings.device) == \
        ("bfloat16", 0.0, "warning", "cuda:1")
    worker = config(settings)["worker_class"]
    assert (worker.max_body, worker.read_timeout) == (settings.max_body_bytes, 30.0)


def test_server_and_training_take_the_same_true_and_false_words():
    from tuneforge.config import FALSE_WORDS, TRUE_WORDS
    from tuneforge.contract import train_env

    for word, expected in [*((w, True) for w in TRUE_WORDS), *((w, False) for w in FALSE_WORDS)]:
        for spelled in (word, word.upper(), f'"{word}"'):
            assert ServeSettings.from_env({"TUNEFORGE_ALLOW_PICKLE": spelled}).allow_pickle is expected, spelled
            assert train_env({"TUNEFORGE_SKIP_PREFLIGHT": spelled}).skip_preflight is expected, spelled


# Bodies as real clients send them (besides those the server tests send through the clients themselves).
CLIENT_BODIES = [
    ("ChatRequest", {"model": "gpt-3.5-turbo", "stream": False, "n": 1, "temperature": 0.7, "logprobs": None,
                     "seed": None, "messages": [{"role": "user", "content": "hi"}]}),  # LangChain ChatOpenAI
    ("ChatRequest", {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True},
                     "parallel_tool_calls": False, "user": "u-1", "metadata": {}, "store": False}),
    ("CompletionRequest", {"model": "m", "prompt": [[1, 2]], "temperature": 0, "max_tokens": 1, "logprobs": 1,
                           "seed": 1234, "echo": True}),  # lm-evaluation-harness local-completions
    ("CompletionRequest", {"model": "m", "prompt": "x", "temperature": 0.7, "top_p": 1, "frequency_penalty": 0,
                           "presence_penalty": 0, "n": 1, "logit_bias": {}, "max_tokens": 256}),  # LangChain OpenAI
    ("TGIRequest", {"inputs": "x", "stream": False, "parameters": {"details": True, "max_new_tokens": 3,
                    "stop": [], "decoder_input_details": False, "return_full_text": False}}),
    ("DialogRequest", {"inputs": [[{"role": "user", "content": "x"}]],
                       "parameters": {"max_new_tokens": 64, "top_p": 0.9, "temperature": 0.6}}),  # JumpStart Llama-2
    ("FlanRequest", {"text_inputs": "x", "max_length": 50, "num_return_sequences": 3, "top_k": 50, "top_p": 0.95,
                     "do_sample": True, "num_beams": 1, "early_stopping": True, "no_repeat_ngram_size": 2}),
]


@pytest.mark.parametrize("kind,body", CLIENT_BODIES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CLIENT_BODIES)])
def test_bodies_real_clients_send_are_read(kind, body):
    from tuneforge.serve import bodies

    assert getattr(bodies, kind).read(body).raw is body


def test_an_unknown_field_names_itself_and_its_format():
    from tuneforge.serve.bodies import ChatRequest, TGIRequest
    from tuneforge.serve.errors import PayloadError

    with pytest.raises(PayloadError) as caught:
        TGIRequest.read({"inputs": "x", "parameters": {"max_length": 9}})
    assert "`parameters.max_length` is not a field of TGI requests" in str(caught.value)
    with pytest.raises(PayloadError) as caught:
        ChatRequest.read({"messages": [], "min_p": 0.1})
    assert str(caught.value).startswith("`min_p` is not a field of OpenAI chat requests; remove it (known: model,")


def _annotations(annotation):
    """`annotation` and every type inside it (unions, Annotated, generics, nested models' fields)."""
    import typing

    from pydantic import BaseModel

    yield annotation
    for inner in typing.get_args(annotation):
        yield from _annotations(inner)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for field in annotation.model_fields.values():
            yield from _annotations(field.annotation)


def test_no_request_field_is_any():
    """Every field a request body declares has a type (issue: 21 fields were `Any`, checked by hand)."""
    import typing

    from tuneforge.serve import bodies

    models = [m for m in vars(bodies).values() if isinstance(m, type) and issubclass(m, bodies.Body)]
    assert len(models) >= 8
    loose = [(m.__name__, name) for m in models for name, field in m.model_fields.items()
             if any(t is typing.Any for t in _annotations(field.annotation))]
    assert loose == []


# (body, the 422's words): options of the APIs the server does not implement are refused by the
# body model itself, and their "asks for nothing" values are taken.
REFUSED = [
    ("TGIRequest", {"inputs": "x", "parameters": {"typical_p": 0.5}}, "`parameters.typical_p` is not supported"),
    ("TGIRequest", {"inputs": "x", "parameters": {"watermark": True}}, "`parameters.watermark` is not supported"),
    ("TGIRequest", {"inputs": "x", "parameters": {"top_n_tokens": 2}}, "`parameters.top_n_tokens` is not supported"),
    ("TGIRequest", {"inputs": "x", "parameters": {"frequency_penalty": 1}}, "`parameters.frequency_penalty` is not"),
    ("TGIRequest", {"inputs": "x", "parameters": {"best_of": 2}}, "`parameters.best_of` must be 1"),
    ("TGIRequest", {"inputs": "x", "parameters": {"adapter_id": 5}}, "`parameters.adapter_id` must be a string"),
    ("FlanRequest", {"text_inputs": "x", "early_stopping": "yes"}, '`early_stopping` must be true, false or "never"'),
    ("ChatRequest", {"messages": [], "presence_penalty": 0.5}, "`presence_penalty` is not supported by this server; "
                                                               "use repetition_penalty"),
    ("ChatRequest", {"messages": [], "frequency_penalty": 3}, "`frequency_penalty` must be a number in [-2, 2]"),
    ("ChatRequest", {"messages": [], "best_of": 3}, "`best_of` must be 1"),
    ("ChatRequest", {"messages": [], "functions": [{"name": "f"}]}, "`functions` is the API before tools"),
    ("ChatRequest", {"messages": [], "function_call": "auto"}, "`function_call` is the API before tools"),
    ("ChatRequest", {"messages": [], "metadata": {"a": 1}}, "`metadata` must be an object of strings"),
    ("ChatRequest", {"messages": [], "user": 7}, "`user` must be a string, got 7"),
    ("ChatRequest", {"messages": [], "parallel_tool_calls": "no"}, "`parallel_tool_calls` must be true or false"),
    ("CompletionRequest", {"prompt": "x", "logit_bias": {"5": 100}}, "`logit_bias` is not supported"),
    ("CompletionRequest", {"prompt": "x", "logit_bias": {"5": "up"}}, "`logit_bias` must map token ids to numbers"),
    ("CompletionRequest", {"prompt": "x", "suffix": "y"}, "`suffix` is not supported: fill-in-the-middle"),
]
NOTHING_ASKED = [
    ("TGIRequest", {"inputs": "x", "parameters": {"typical_p": 0, "watermark": False, "top_n_tokens": 0,
                                                 "frequency_penalty": 0.0, "best_of": 1, "adapter_id": None}}),
    ("TGIRequest", {"inputs": "x", "parameters": {"best_of": 0}}),  # TGI clients' unset
    ("FlanRequest", {"text_inputs": "x", "early_stopping": "never"}),
    ("ChatRequest", {"messages": [], "functions": [], "function_call": None, "presence_penalty": 0, "best_of": 1,
                     "metadata": {"k": "v"}, "service_tier": "auto", "safety_identifier": "s", "prompt_cache_key": "p"}),
    ("CompletionRequest", {"prompt": "x", "suffix": "", "logit_bias": {}, "frequency_penalty": -0.0}),
]


@pytest.mark.parametrize("kind,body,words", REFUSED, ids=[w.split("`")[1] + f"-{i}" for i, (_, _, w) in
                                                          enumerate(REFUSED)])
def test_an_option_the_server_lacks_is_refused_by_its_declaration(kind, body, words):
    from tuneforge.serve import bodies
    from tuneforge.serve.errors import PayloadError

    with pytest.raises(PayloadError) as caught:
        getattr(bodies, kind).read(body)
    assert caught.value.status == 422 and str(caught.value).startswith(words), str(caught.value)


@pytest.mark.parametrize("kind,body", NOTHING_ASKED, ids=[f"{k}-{i}" for i, (k, _) in enumerate(NOTHING_ASKED)])
def test_an_option_the_server_lacks_is_taken_when_it_asks_for_nothing(kind, body):
    from tuneforge.serve import bodies

    assert getattr(bodies, kind).read(body).raw is body


def test_serve_check_refuses_truncated_or_corrupt_safetensors(tiny, tmp_path):
    """The check reads what loading reads first (the header, and the file's length against it), so
    `serve --check` and the master fail with the file named instead of a worker at boot."""
    import os
    import shutil
    import subprocess
    import sys

    for damage, words in ((lambda data: data[:len(data) // 2], "cut short: its tensors need"),
                          (lambda data: b"\xff" * 8 + data[8:], "header claims"),
                          (lambda data: data[:8] + b"{not json" + data[17:], "cannot be read")):
        folder = tmp_path / f"model-{len(words)}"
        shutil.copytree(tiny("llama"), folder)
        weights = folder / "model.safetensors"
        weights.write_bytes(damage(weights.read_bytes()))
        done = subprocess.run([sys.executable, "-m", "tuneforge.serve.server", "--model-dir", str(folder), "--check"],
                              env=dict(os.environ, SERVING_ENGINE="transformers"), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and str(weights) in done.stderr and "copy the file again" in done.stderr


def test_admission_refuses_only_deadline_requests_behind_a_long_wait():
    from tuneforge.serve import admission
    from tuneforge.serve.engine import GenerationRequest
    from tuneforge.serve.errors import Overloaded

    timed, stream = GenerationRequest([1], 4, deadline=100.0), GenerationRequest([1], 4, stream=True)
    for request, wait in ((timed, None), (timed, 27.5), (stream, 40.0)):
        admission.admit(request, wait, 55.0)  # nothing waits, a wait under half the deadline, a stream
    with pytest.raises(Overloaded) as refused:
        admission.admit(timed, 27.6, 55.0)
    assert refused.value.retry_after == 28 and "(TUNEFORGE_REQUEST_DEADLINE)" in str(refused.value)


def test_cut_generate_calls_give_the_same_answers(tiny, monkeypatch):
    """Slicing at its extreme: an engine that yields after every token whenever another request waits
    (two kinds of request take turns) answers as one that never yields: text, tokens, log-probabilities
    and their alternatives, stop sequences, guided output, n > 1, prompt scores, finish reasons."""
    import torch

    from tuneforge.serve.guided import compile_plan
    from tuneforge.serve.loader import load_model

    from tuneforge.serve import engine as engine_module

    torch.set_num_threads(1)
    monkeypatch.setattr(engine_module, "CUT_COST", 0)  # no prefill-time floor: a cut every other token
    plan, calls = None, {}

    def answers(slice_s: float) -> list:
        nonlocal plan
        settings = ServeSettings(model_dir=Path(tiny("llama")), batch_slice_s=slice_s, max_batch_wait_ms=50)
        engine = Engine(load_model(settings), settings)
        generate, calls[slice_s] = engine._generate, 0

        def counted(*args):
            calls[slice_s] += 1
            return generate(*args)

        engine._generate = counted
        plan = plan or compile_plan("(yes|no)( indeed)?", engine.tokenizer, engine.loaded.eos_token_ids[0])
        repeat = Sampling(repetition_penalty=1.3)  # another batch key: the two kinds take turns
        requests = [GenerationRequest([1, 10, 11], 40, top_logprobs=2, prompt_logprobs=1),
                    GenerationRequest([1, 12, 13, 14], 30, repeat, n=2),
                    GenerationRequest([1, 15], 40, stop=("e", "an")),
                    GenerationRequest([1, 16, 17], 12, guide=plan),
                    GenerationRequest([1, 18, 19], 40, repeat, top_logprobs=1)]
        try:
            jobs = [engine.submit(request) for request in requests]
            return [job.wait(120) for job in jobs]
        finally:
            engine.close()

    uncut, cut = answers(0), answers(1e-9)
    for one, other in zip(uncut, cut, strict=True):
        for a, b in zip(one.sequences, other.sequences, strict=True):
            assert (a.text, a.finish_reason, [t.id for t in a.tokens]) == (b.text, b.finish_reason, [t.id for t in b.tokens])
            for x, y in zip(a.tokens, b.tokens):
                assert (x.text, x.special) == (y.text, y.special)
                assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
                assert [i for i, _, _ in x.top] == [i for i, _, _ in y.top]
        assert one.prompt_scores == other.prompt_scores and one.seed == other.seed
    assert sum(len(s.tokens) for r in cut for s in r.sequences) > 100
    assert calls[0] <= 3 and calls[1e-9] >= 15, calls  # the cut engine took many turns
