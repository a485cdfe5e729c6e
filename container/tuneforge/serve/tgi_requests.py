"""TGI, Llama-2 dialog, Flan-T5 and bare-text bodies -> Invocations (what their `to_requests` does).

Every prompt goes through the saved PromptFormat / chat template (prompting.py), so the model is
asked the way it was taught: on an instruction or table fine-tune, plain strings and a single chat
turn are rendered through its template.
"""

from __future__ import annotations

from .errors import invalid
from .invocation import Invocation
from .limits import sampling, tgi_sampling
from .prompting import render_chat, render_input

def text_requests(prompt: str, params, limits) -> Invocation:
    """A bare prompt (text/plain), sampled by TGI's rules from default `params`."""
    prompt = limits.prompt_format.render_text(prompt)
    req = limits.request(limits.encode(prompt, "body"), "body", tgi_sampling(params))
    return Invocation("text", [req], [prompt])


def tgi_requests(body, params, limits, force_stream: bool = False) -> Invocation:
    """{"inputs": str | [str] | {prompt fields}, "parameters": `params`, "stream": bool}."""
    stream = force_stream or bool(body.stream)
    inputs, list_input = body.inputs, isinstance(body.inputs, list)
    items = inputs if list_input else [inputs]
    limits.check_count(items, "inputs")
    if stream and list_input:
        raise invalid("`stream: true` takes a single input, not a list")
    sampling_ = tgi_sampling(params)
    guide = _grammar(limits, params.grammar)
    adapter = limits.adapter(params.adapter_id)
    requests, texts = [], []
    for i, item in enumerate(items):
        where = f"inputs[{i}]" if list_input else "inputs"
        text = render_input(limits, item, where)
        ids = limits.encode(text, where)
        if params.truncate is not None:
            ids = ids[-params.truncate:]
        requests.append(limits.request(ids, where, sampling_, asked=params.max_new_tokens, stop=params.stops,
                                       prefix="parameters.", stream=stream, guide=guide, adapter=adapter))
        texts.append(text)
    options = {"details": bool(params.details), "decoder_input_details": bool(params.decoder_input_details),
               "return_full_text": bool(params.return_full_text)}
    return Invocation("tgi", requests, texts, stream, list_input, options)


def dialog_requests(body, params, limits) -> Invocation:
    """{"inputs": [[{role, content}, ...], ...], "parameters": `params`} (JumpStart Llama-2 chat)."""
    inputs = body.inputs
    dialogs = inputs if inputs and isinstance(inputs[0], list) else [inputs]
    limits.check_count(dialogs, "inputs")
    if body.stream:
        raise invalid("streaming is not available for Llama-2 dialog lists; use `messages` (OpenAI chat)")
    sampling_ = tgi_sampling(params)
    requests, texts = [], []
    for i, dialog in enumerate(dialogs):
        where = f"inputs[{i}]"
        text = render_chat(limits, dialog, where)
        requests.append(limits.request(limits.encode(text, where), where, sampling_, asked=params.max_new_tokens,
                                       stop=params.stops, prefix="parameters."))
        texts.append(text)
    return Invocation("dialog", requests, texts, False, True)


def flan_requests(body, limits) -> Invocation:
    """{"text_inputs": str | [str], "max_length": .., "num_return_sequences": .., ...}."""
    inputs = body.text_inputs
    list_input = isinstance(inputs, list)
    items = inputs if list_input else [inputs]
    limits.check_count(items, "text_inputs")
    if (body.num_beams or 1) != 1:
        raise invalid("`num_beams` must be 1 (beam search is not supported; use do_sample or greedy)")
    sampling_ = sampling(body, do_sample=bool(body.do_sample))
    requests, texts = [], []
    for i, item in enumerate(items):
        where = f"text_inputs[{i}]" if list_input else "text_inputs"
        text = render_input(limits, item, where)
        ids = limits.encode(text, where)
        asked = body.max_new_tokens
        if asked is None and body.max_length is not None:
            # HF semantics: max_length counts the prompt (causal) or the decoder start token.
            asked = body.max_length - (1 if limits.loaded.seq2seq else len(ids))
            if asked < 1:
                raise invalid(f"`max_length` ({body.max_length}) leaves no room to generate after the "
                              f"{len(ids)}-token prompt; raise it or use max_new_tokens")
        requests.append(limits.request(ids, where, sampling_, asked=asked, stop=body.stop,
                                       n=body.num_return_sequences or 1))
        texts.append(text)
    return Invocation("flan", requests, texts, False, list_input)


def _grammar(limits, grammar):
    """TGI's `parameters.grammar` (a read prompt_types.Grammar) as a compiled constraint."""
    if grammar is None:
        return None
    if grammar.type == "regex":
        return limits.guide("parameters.grammar", regex=grammar.value)
    return limits.guide("parameters.grammar", schema=grammar.value)
