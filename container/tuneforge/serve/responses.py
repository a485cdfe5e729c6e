"""Results -> the caller's own response shape, whole or as server-sent events.

Non-streamed answers are JSON; streamed ones are SSE (`data: {...}\\n\\n`) like TGI and OpenAI.
A streamed answer's token texts concatenate to exactly the non-streamed generated text for the
same request (greedy or same seed): both come from one sequence of decoded deltas.
"""

from __future__ import annotations

import json
import time
import uuid

from .engine import Result, Sequence, StreamEvent
from .errors import error_type_of
from .invocation import Invocation


def sse(obj) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def openai_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _token(t, text=None) -> dict:
    return {"id": t.id, "text": t.text if text is None else text, "logprob": t.logprob, "special": t.special}


# ---------------------------------------------------------------------- whole answers
def render(inv: Invocation, results: list[Result], tokenizer, bare: bool = False):
    if inv.kind == "text":
        return {"generated_text": results[0].sequences[0].text}
    if inv.kind == "tgi":
        items = [_tgi_item(inv, i, r, tokenizer) for i, r in enumerate(results)]
        return items[0] if bare and not inv.list_input else items
    if inv.kind == "dialog":
        return [{"generation": {"role": "assistant", "content": r.sequences[0].text}} for r in results]
    if inv.kind == "flan":
        texts = [[s.text for s in r.sequences] for r in results]
        return {"generated_texts": texts if inv.list_input else texts[0]}
    if inv.kind == "chat":
        return _chat(inv, results[0])
    if inv.kind == "completion":
        return _completion(inv, results)
    if inv.kind == "responses":
        from .responses_api import render as responses_answer

        return responses_answer(inv, results[0], _chat_message, _usage)
    raise ValueError(inv.kind)


def _tgi_item(inv: Invocation, i: int, result: Result, tokenizer) -> dict:
    seq = result.sequences[0]
    prefix = inv.prompt_texts[i] if inv.options.get("return_full_text") else ""
    item = {"generated_text": prefix + seq.text}
    if inv.options.get("details"):
        prefill = []
        if inv.options.get("decoder_input_details"):
            ids = inv.requests[i].prompt_ids
            prefill = [{"id": t, "text": tokenizer.decode([t]), "logprob": None} for t in ids]
        item["details"] = {"finish_reason": seq.finish_reason, "generated_tokens": len(seq.tokens),
                           "seed": result.seed, "prefill": prefill,
                           "tokens": [_token(t) for t in seq.tokens], "top_tokens": None,
                           "best_of_sequences": None}
    return item


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def fingerprint() -> str:
    """OpenAI's system_fingerprint: a string (TGI always sends one; some clients require it)."""
    from .. import __version__

    return f"tuneforge-{__version__}"


def _chat_token(t) -> dict:
    entry = {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode())}
    top = [{"token": text, "logprob": logprob, "bytes": list(text.encode())} for _, text, logprob in t.top or []]
    return dict(entry, top_logprobs=top)


def _chat_message(inv: Invocation, s: Sequence) -> tuple[dict, str]:
    """The assistant message and finish reason; a tool call when the request's tool choice made one."""
    from .structured import tool_calls

    calls = tool_calls(inv.options["tools"], s.text) if inv.options.get("tools") else None
    if calls and s.finish_reason != "length":
        return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": s.text}, openai_reason(s.finish_reason)


def _chat(inv: Invocation, result: Result) -> dict:
    choices = []
    for s in result.sequences:
        message, reason = _chat_message(inv, s)
        logprobs = {"content": [_chat_token(t) for t in s.tokens]} if inv.options.get("logprobs") else None
        choices.append({"index": s.index, "message": message, "logprobs": logprobs, "finish_reason": reason})
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": inv.options["model"], "system_fingerprint": fingerprint(), "choices": choices,
            "usage": _usage(result.prompt_tokens, result.generated_tokens)}


def _running_offsets(tokens: list, start: int) -> list[int]:
    offsets, at = [], start
    for t in tokens:
        offsets.append(at)
        at += 0 if t.special else len(t.text)
    return offsets


def _completion_logprobs(tokens: list, offsets: list[int]) -> dict:
    """The legacy completions shape; each top_logprobs dict holds the alternatives and the
    chosen token itself (as vLLM), None where a token has no log-probability (a prompt's first)."""
    tops = [None if t.logprob is None else {**{text: lp for _, text, lp in t.top or []}, t.text: t.logprob}
            for t in tokens]
    return {"tokens": [t.text for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": tops, "text_offset": offsets}


def _completion(inv: Invocation, results: list[Result]) -> dict:
    choices = []
    for p, result in enumerate(results):
        echo = inv.prompt_texts[p] if inv.options.get("echo") else ""
        prompt = result.prompt_scores or []
        spans = (inv.options.get("prompt_offsets") or [None] * len(results))[p]
        head = spans if spans is not None and len(spans) == len(prompt) else _running_offsets(prompt, 0)
        for s in result.sequences:
            logprobs = None
            if inv.options.get("logprobs") is not None:
                logprobs = _completion_logprobs(prompt + s.tokens, head + _running_offsets(s.tokens, len(echo)))
            choices.append({"index": len(choices), "text": echo + s.text, "logprobs": logprobs,
                            "finish_reason": openai_reason(s.finish_reason)})
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": inv.options["model"], "system_fingerprint": fingerprint(), "choices": choices,
            "usage": _usage(sum(r.prompt_tokens for r in results), sum(r.generated_tokens for r in results))}


# ---------------------------------------------------------------------- streams
def stream(inv: Invocation, job):
    """SSE lines for one streamed request; errors after the first byte become an error event."""
    try:
        if inv.kind == "tgi":
            yield from _tgi_stream(inv, job)
        elif inv.kind == "chat":
            yield from _openai_stream(inv, job, chat=True)
        else:
            yield from _openai_stream(inv, job, chat=False)
    except Exception as exc:  # noqa: BLE001 - the status line is long gone; tell the client in-band
        yield sse({"error": str(exc)[:500], "error_type": error_type_of(exc)})


def _tgi_stream(inv: Invocation, job):
    prefix = inv.prompt_texts[0] if inv.options.get("return_full_text") else ""
    count = 0
    for item in job.stream():
        if isinstance(item, Result):
            return
        count += 1
        event = {"index": count, "token": _token(item.token, item.text), "generated_text": None,
                 "details": None, "top_tokens": None}
        if item.sequence is not None:
            event["generated_text"] = prefix + item.sequence.text
            event["details"] = {"finish_reason": item.sequence.finish_reason,
                                "generated_tokens": len(item.sequence.tokens), "seed": job.seed,
                                "input_length": len(job.request.prompt_ids)}
        yield sse(event)


def _openai_stream(inv: Invocation, job, *, chat: bool):
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    head = {"id": ident, "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()), "model": inv.options["model"], "system_fingerprint": fingerprint()}

    def chunk(index: int, text: str | None, reason: str | None, token=None) -> str:
        if chat:
            delta = {} if text is None else {"content": text}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            if token is not None and inv.options.get("logprobs"):
                choice["logprobs"] = {"content": [_chat_token(token)]}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
            if token is not None and inv.options.get("logprobs") is not None:
                choice["logprobs"] = _completion_logprobs([token], 0)
        return sse({**head, "choices": [choice]})

    tools = inv.options.get("tools")
    held = chat and tools is not None and tools.mode in ("named", "required")
    if chat:
        for i in range(job.request.n):
            yield sse({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}]})
    elif inv.options.get("echo"):
        for i in range(job.request.n):
            yield chunk(i, inv.prompt_texts[0], None)
    for item in job.stream():
        if isinstance(item, Result):
            if inv.options.get("include_usage"):
                yield sse({**head, "choices": [], "usage": _usage(item.prompt_tokens, item.generated_tokens)})
            break
        event: StreamEvent = item
        if not held and (event.text or inv.options.get("logprobs") not in (None, False)):  # logprobs: every token
            yield chunk(event.index, event.text, None, event.token)
        if event.sequence is not None:
            if held:  # a forced tool call goes out whole, as one tool_calls delta
                message, reason = _chat_message(inv, event.sequence)
                calls = [dict(c, index=k) for k, c in enumerate(message.get("tool_calls") or [])]
                delta = {"tool_calls": calls} if calls else {"content": event.sequence.text}
                yield sse({**head, "choices": [{"index": event.index, "delta": delta, "logprobs": None,
                                                "finish_reason": reason}]})
            else:
                yield chunk(event.index, None, openai_reason(event.sequence.finish_reason))
    yield "data: [DONE]\n\n"
