"""Scores of a served model (a tuneforge server's URL) on tasks, equal to the model folder's:
generation items go to the server's own rendering (`messages` to /v1/chat/completions, `prompt`
and template fields to /invocations, which render them with the saved template as scoring.py
does), greedy; multiple-choice items are tokenized by the server's /tokenize as scoring.py
tokenizes them, and /v1/completions with `echo` and `logprobs` returns each token's log-probability;
lm-evaluation-harness YAMLs run through an lm-eval model that sends the same requests
(endpoint_harness.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from ..errors import DataError, ModelError
from .scoring import generation_scores, multiple_choice_scores, split_pair
from .harness import HARNESS
from .tasks import GENERATION, Task

TIMEOUT_S = 300  # one request; a long generation on a CPU server takes a while


def is_url(text: str) -> bool:
    return str(text).startswith(("http://", "https://"))


class Endpoint:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        for suffix in ("/invocations", "/v1"):  # a client's base URL: the server's root is meant
            self.url = self.url.removesuffix(suffix)

    def ping(self) -> None:
        """The server answers and its model is loaded (/ping 200), before any task is sent."""
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=30):
                return
        except urllib.error.HTTPError as exc:
            raise ModelError(f"{self.url}/ping answered {exc.code}: the server has not loaded its model", where=
                             "--model-dir", fix="wait until /ping answers 200 (the model is loading), or read the "
                             "server's log") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise self._unreachable("/ping", exc) from None

    def _unreachable(self, path: str, exc: Exception) -> ModelError:
        return ModelError(f"cannot reach {self.url}{path} ({exc})", where="--model-dir",
                          fix="start the server (tuneforge serve / docker run IMAGE serve) and pass its URL, "
                          "e.g. http://127.0.0.1:8080")

    def post(self, path: str, body: dict, where: str) -> dict | list:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:  # the server's own message says what it refused
            raise DataError(f"{self.url}{path} answered {exc.code}: {exc.read().decode(errors='replace')[:500]}",
                            where=where, fix="a tuneforge server scores every kind of item; check the item, or "
                            "score the model folder instead") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise self._unreachable(path, exc) from None


def score_endpoint(url: str, tasks: list[Task], *, max_new_tokens: int = 64) -> dict[str, dict]:
    """Every task's scores (as scoring.score_task's) on the server at `url`."""
    endpoint = Endpoint(url)
    endpoint.ping()
    return {task.name: _score(task, endpoint, max_new_tokens) for task in tasks}


def _score(task: Task, endpoint: Endpoint, max_new_tokens: int) -> dict:
    if task.kind == HARNESS:
        from .endpoint_harness import EndpointLM
        from .harness import score_with

        return score_with(task, EndpointLM(endpoint, str(task.path)))
    if task.kind == GENERATION:
        answers = [_answer(endpoint, item, max_new_tokens, f"{task.path}:{i + 1}") for i, item in enumerate(task.items)]
        prompts = [item.get("messages") or item.get("prompt") or {k: v for k, v in item.items() if k != "reference"}
                   for item in task.items]
        return generation_scores(task, prompts, answers)
    return multiple_choice_scores(task, lambda context, continuation: _loglikelihood(
        endpoint, context, continuation, str(task.path)))


def _answer(endpoint: Endpoint, item: dict, max_new_tokens: int, where: str) -> str:
    """The greedy answer, rendered by the server as the folder's scoring renders it."""
    if "messages" in item:
        body = {"messages": item["messages"], "max_tokens": max_new_tokens, "temperature": 0}
        return (endpoint.post("/v1/chat/completions", body, where)["choices"][0]["message"]["content"] or "").strip()
    inputs = str(item["prompt"]) if "prompt" in item else {k: v for k, v in item.items() if k != "reference"}
    body = {"inputs": inputs, "parameters": {"max_new_tokens": max_new_tokens, "do_sample": False}}
    return endpoint.post("/invocations", body, where)[0]["generated_text"].strip()


def _loglikelihood(endpoint: Endpoint, context: str, continuation: str, where: str) -> float:
    """log p(continuation | context) from the log-probabilities the server echoes for the prompt's
    tokens; the same token split as scoring.loglikelihood (no special tokens added)."""
    context, continuation = split_pair(context, continuation)
    context_ids = _tokens(endpoint, context, where)
    target = _tokens(endpoint, context + continuation, where)[len(context_ids):]
    body = {"prompt": context_ids + target, "echo": True, "logprobs": 0, "max_tokens": 0, "temperature": 0}
    echoed = endpoint.post("/v1/completions", body, where)["choices"][0]["logprobs"]["token_logprobs"]
    return float(sum(echoed[len(context_ids):len(context_ids) + len(target)]))


def _tokens(endpoint: Endpoint, text: str, where: str) -> list[int]:
    return endpoint.post("/tokenize", {"prompt": text, "add_special_tokens": False}, where)["tokens"]

