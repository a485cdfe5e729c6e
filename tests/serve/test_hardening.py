"""Hostile and odd clients: slow senders, oversized and odd bodies, NaN, Accept, stop sequences.

Slow clients are raw sockets on 127.0.0.1 only, bounded in number and time, closed by the test.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.serve.conftest import HOST, Server, running

SLOW_CLIENTS = 70  # more than the 64 request threads of a worker
PROMPT = "What color is the lemon?"
OK = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}


def open_slow_client(server: Server, partial: bytes) -> socket.socket:
    sock = socket.create_connection((HOST, server.port), timeout=5)
    sock.sendall(partial)
    return sock


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or `timeout`)."""
    sock.settimeout(timeout)
    data = b""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def split_response(raw: bytes) -> tuple[int, dict, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


# ---------------------------------------------------------------------- slow clients
def test_ping_and_invocations_stay_answered_while_70_slow_clients_hold_connections(causal):
    body = json.dumps(OK).encode()
    heads = [b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(body) + body[:5],  # headers and a few body bytes
             b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Le",  # half the headers
             b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"in"]
    slow = []
    try:
        for i in range(SLOW_CLIENTS):
            slow.append(open_slow_client(causal, heads[i % len(heads)]))
        time.sleep(0.5)  # let the server take them all in
        for _ in range(3):
            started = time.monotonic()
            ping = requests.get(causal.url + "/ping", timeout=1)
            assert ping.status_code == 200
            answer = requests.post(causal.url + "/invocations", json=OK, timeout=1)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started < 2
        # the slow clients are still connected and unanswered
        for sock in slow[:5]:
            sock.settimeout(0.05)
            with pytest.raises(socket.timeout):
                sock.recv(1)
    finally:
        for sock in slow:
            sock.close()


def test_ping_gets_in_while_a_thousand_idle_connections_fill_the_slots(causal):
    """More idle (connected, silent) and stalled (half a request line) clients than the worker's
    1000 connection slots: the oldest are closed to make room, so /ping answers at once."""
    clients = []
    try:
        for i in range(1100):
            sock = socket.create_connection((HOST, causal.port), timeout=5)
            if i % 2:
                sock.sendall(b"GET /pi")
            clients.append(sock)
        time.sleep(1.5)  # the event loop's turn: it has accepted what it could
        start = time.monotonic()
        assert requests.get(causal.url + "/ping", timeout=10).status_code == 200
        assert time.monotonic() - start < 3
    finally:
        for sock in clients:
            sock.close()
    assert causal.post(json=OK).status_code == 200


def test_a_slow_client_finishing_late_gets_its_answer(causal):
    body = json.dumps(OK).encode()
    head = (b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with open_slow_client(causal, head + body[:3]) as sock:
        for i in range(3, len(body), 7):
            time.sleep(0.05)
            sock.sendall(body[i:i + 7])
        status, headers, answer = split_response(read_response(sock, 30))
    assert status == 200
    assert json.loads(answer) == causal.post(json=OK).json()


@pytest.fixture(scope="module")
def guarded(model_dirs, tmp_path_factory):
    """A 1 s request read timeout and a 0.05 MB body limit."""
    env = {"TUNEFORGE_REQUEST_READ_TIMEOUT": "1", "TUNEFORGE_MAX_BODY_MB": "0.05"}
    with running(model_dirs["instruct"], tmp_path_factory.mktemp("guarded"), env) as server:
        yield server


def test_a_request_not_received_within_the_read_timeout_gets_408(guarded):
    started = time.monotonic()
    with open_slow_client(guarded, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{") as sock:
        status, headers, body = split_response(read_response(sock, 10))
    assert status == 408
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body) == {"error": "the request was not received within 1 s "
                                         "(TUNEFORGE_REQUEST_READ_TIMEOUT)", "error_type": "request_timeout"}
    assert 0.9 < time.monotonic() - started < 4
    assert guarded.post(json=OK).status_code == 200


# ---------------------------------------------------------------------- 413 and body framing
def test_a_body_over_the_limit_from_requests_gets_the_413_json(guarded):
    big = b'{"inputs": "' + b"a" * (8 * 1024 * 1024) + b'"}'  # no Expect: 100-continue
    response = requests.post(guarded.url + "/invocations", data=big, timeout=60,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"error": "the request body is larger than 0.05 MB (SAGEMAKER_MAX_PAYLOAD_IN_MB / "
                                        "TUNEFORGE_MAX_BODY_MB)", "error_type": "payload_too_large"}
    pieces = iter([big[i:i + 65536] for i in range(0, 1 << 20, 65536)])  # chunked, no Content-Length
    chunked = requests.post(guarded.url + "/invocations", data=pieces, timeout=60,
                            headers={"Content-Type": "application/json"})
    assert chunked.status_code == 413 and chunked.json()["error_type"] == "payload_too_large"
    assert guarded.post(json=OK).status_code == 200


def test_a_body_over_the_limit_from_urllib_gets_the_413_json(guarded):
    import urllib.error
    import urllib.request

    big = b'{"inputs": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    req = urllib.request.Request(guarded.url + "/invocations", data=big, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=60)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["error_type"] == "payload_too_large"


def test_expect_100_continue_and_chunked_bodies_are_read_before_the_app_runs(causal):
    body = json.dumps(OK).encode()
    with open_slow_client(causal, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                                  % len(body)) as sock:
        sock.settimeout(10)
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        raw = read_response(sock, 30)
    assert raw.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in raw
    expected = causal.post(json=OK).json()
    assert json.loads(split_response(raw)[2]) == expected
    chunked = requests.post(causal.url + "/invocations", data=iter([body[:4], body[4:]]), timeout=30,
                            headers={"Content-Type": "application/json"})
    assert chunked.status_code == 200 and chunked.json() == expected


@pytest.mark.parametrize("raw,status,error_type,words", [
    (b"GET /ping?q=" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long", "URI Too Long"),
    (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", 431, "headers_too_large",
     "Request Header Fields Too Large"),
    (b"NOT A REQUEST\r\n\r\n", 400, "malformed_request", "Bad Request"),
])
def test_requests_gunicorn_cannot_parse_get_json_errors(causal, raw, status, error_type, words):
    with open_slow_client(causal, raw) as sock:
        answer = read_response(sock, 10)
    code, headers, body = split_response(answer)
    assert code == status and headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["error_type"] == error_type and error["error"].startswith(words)
    assert requests.get(causal.url + "/ping", timeout=5).status_code == 200


def test_chunk_extensions_count_against_the_body_limit(guarded):
    """1-byte chunks, each with a 4 KB extension: refused once the framing passes twice the limit
    (0.05 MB here), long before the 2 GB such a body once made a worker hold."""
    with open_slow_client(guarded, b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n") as sock:
        piece = b"1;" + b"e" * 4096 + b"\r\na\r\n"
        sent = 0
        try:
            while sent < 4 * 1024 * 1024:
                sock.sendall(piece)
                sent += len(piece)
        except OSError:  # the server answered and stopped reading
            pass
        answer = read_response(sock, 10)
    assert split_response(answer)[0] == 413
    assert guarded.post(json=OK).status_code == 200


# ---------------------------------------------------------------------- NaN and infinity
NON_FINITE = ["NaN", "Infinity", "-Infinity"]
FLOAT_FIELDS = [
    ('{"inputs": "hi", "parameters": {"%s": %s}}', "parameters.", ["temperature", "top_p", "repetition_penalty"]),
    ('{"inputs": [[{"role": "user", "content": "hi"}]], "parameters": {"%s": %s}}', "parameters.",
     ["temperature", "top_p", "repetition_penalty"]),
    ('{"text_inputs": "hi", "do_sample": true, "%s": %s}', "", ["temperature", "top_p", "repetition_penalty"]),
    ('{"messages": [{"role": "user", "content": "hi"}], "%s": %s}', "", ["temperature", "top_p", "repetition_penalty"]),
    ('{"prompt": "hi", "%s": %s}', "", ["temperature", "top_p", "repetition_penalty"]),
]
NAN_CASES = [(template % (name, value), prefix + name, value)
             for template, prefix, names in FLOAT_FIELDS for name in names for value in NON_FINITE]


@pytest.mark.parametrize("body,field,value", NAN_CASES, ids=[f"{c[1]}={c[2]}-{i}" for i, c in enumerate(NAN_CASES)])
def test_nan_and_infinity_are_422_naming_the_field(causal, body, field, value):
    response = causal.post(data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error_type"] == "validation"
    assert f"`{field}` must be a finite number" in error["error"], error["error"]
    assert value.lower().lstrip("-")[:3] in error["error"].lower()


# ---------------------------------------------------------------------- odd JSON
def test_deeply_nested_json_is_400_and_the_worker_stays_up(causal):
    deep = "[" * 100_000 + "]" * 100_000
    for body in (deep, '{"inputs": ' + deep + "}"):
        response = causal.post(data=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error_type"] == "malformed_json"
        assert "nested too deeply" in response.json()["error"]
    lines = causal.post(data='{"inputs": "a"}\n' + deep + "\n", headers={"Content-Type": "application/jsonlines"})
    assert lines.status_code == 400 and lines.json()["error"].startswith("line 2: ")
    assert causal.post(json=OK).status_code == 200


@pytest.mark.parametrize("body,field", [
    ('{"inputs": "hi \\ud800 there"}', "inputs"),
    ('{"inputs": ["ok", "\\udfff"]}', "inputs[1]"),
    ('{"messages": [{"role": "user", "content": "\\ud83d"}]}', "messages[0].content"),
    ('{"inputs": "hi", "parameters": {"stop": ["\\udc00"]}}', "parameters.stop[0]"),
])
def test_a_lone_surrogate_is_422_naming_the_field(causal, body, field):
    response = causal.post(data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(f"`{field}` holds a lone UTF-16 surrogate")
    # a surrogate pair is one character and is fine
    pair = causal.post(data='{"inputs": "hi \\ud83d\\ude00", "parameters": {"max_new_tokens": 2}}',
                       headers={"Content-Type": "application/json"})
    assert pair.status_code == 200, pair.text


# ---------------------------------------------------------------------- Accept
def test_an_accept_the_server_cannot_produce_is_406(causal):
    for accept in ("text/csv", "application/json;q=0", "text/event-stream"):
        response = causal.post(json=OK, headers={"Accept": accept})
        assert response.status_code == 406, (accept, response.text)
        assert response.json() == {
            "error": f"cannot answer with Accept: {accept}; this request can be answered as application/json, "
                     "application/jsonlines, application/jsonl, application/x-jsonlines, application/json-lines, "
                     "application/x-ndjson", "error_type": "not_acceptable"}
    stream = causal.post(json=dict(OK, stream=True), headers={"Accept": "text/csv"})
    assert stream.status_code == 406
    assert stream.json()["error"] == "cannot answer with Accept: text/csv; this request can be answered as " \
                                     "text/event-stream"


def test_accept_picks_json_or_json_lines(causal):
    expected = causal.post(json=OK).json()
    for accept in ("*/*", "application/*", "application/json", "text/csv, application/json;q=0.5"):
        response = causal.post(json=OK, headers={"Accept": accept})
        assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
        assert response.json() == expected
    one_line = causal.post(json=OK, headers={"Accept": "application/x-jsonlines"})
    assert one_line.headers["Content-Type"] == "application/x-jsonlines"
    assert one_line.text == json.dumps(expected, separators=(",", ":")) + "\n"

    lines = json.dumps(OK) + "\n" + json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 2}}) + "\n"
    as_lines = causal.post(data=lines, headers={"Content-Type": "application/jsonlines"})
    assert as_lines.headers["Content-Type"] == "application/jsonlines"
    as_array = causal.post(data=lines, headers={"Content-Type": "application/jsonlines", "Accept": "application/json"})
    assert as_array.status_code == 200 and as_array.headers["Content-Type"] == "application/json"
    assert as_array.json() == [json.loads(line) for line in as_lines.text.splitlines()]


def test_a_stream_is_event_stream_for_sse_json_and_wildcard_accepts(causal):
    for accept in ("text/event-stream", "application/json", "*/*"):  # the openai client sends application/json
        response = causal.post(json=dict(OK, stream=True), headers={"Accept": accept}, stream=True)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        response.close()


# ---------------------------------------------------------------------- stop sequences
def test_stop_sequences_are_bounded_and_never_empty(causal):
    huge = causal.post(json={"inputs": "hi", "parameters": {"stop": ["x" * 1_000_000]}})
    assert huge.status_code == 422
    assert huge.json()["error"] == ("`parameters.stop[0]` is 1000000 characters long; a stop sequence may have at "
                                    "most 256 (TUNEFORGE_MAX_STOP_SEQUENCE_CHARS)")
    for stop in ("", ["a", ""]):
        empty = causal.post(json={"inputs": "hi", "parameters": {"stop": stop}})
        assert empty.status_code == 422 and "non-empty" in empty.json()["error"]
    openai = causal.post(json={"prompt": "hi", "stop": "y" * 257, "max_tokens": 2})
    assert openai.status_code == 422 and openai.json()["error"].startswith("`stop` is 257 characters long")
    none = causal.post(json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "stop": []}})
    assert none.status_code == 200 and none.json() == causal.post(json=OK).json()


def test_pipelined_requests_on_one_connection_are_answered_in_order(causal):
    body = json.dumps(OK).encode()
    requests_bytes = (b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body +
                      b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    with open_slow_client(causal, requests_bytes) as sock:
        raw = read_response(sock, 30)
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3, raw
    assert json.dumps(causal.post(json=OK).json(), separators=(",", ":")).encode() in raw


def test_a_looping_chat_template_answers_an_error_and_frees_the_thread(tiny, tmp_path):
    """The model's own template loops (10^10 iterations): the chat request ends after the render
    limit with the reason, /ping answers meanwhile, and the worker's CPU is free afterwards."""
    import shutil

    folder = tmp_path / "looping"
    shutil.copytree(tiny("llama"), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    server = Server(folder, tmp_path / "serve.log").wait_ready()
    try:
        start = time.monotonic()
        with requests.Session() as pinger:
            import threading

            pings: list[float] = []
            done = threading.Event()

            def ping():
                while not done.is_set():
                    t = time.monotonic()
                    pinger.get(server.url + "/ping", timeout=5)
                    pings.append(time.monotonic() - t)
                    time.sleep(0.5)

            watcher = threading.Thread(target=ping)
            watcher.start()
            answer = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                                 timeout=60)
            done.set()
            watcher.join()
        error = answer.json()["error"]  # the OpenAI error shape on the OpenAI routes
        assert answer.status_code == 500 and error["type"] == "chat_template"
        assert "did not render this conversation within 10 s (a loop in the template)" in error["message"]
        assert time.monotonic() - start < 30 and pings and max(pings) < 1
        assert server.post(json=OK).status_code == 200  # the TGI route renders no chat template
    finally:
        server.stop()
