"""HTTP LLM backends against a local server imitating OpenAI completions and Gemini."""

import collections
import http.server
import json
import math
import re
import threading
import time

import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.fret import backends
from gecko_jax.fret import http_backend
from gecko_jax.fret.llm import LLMError

SECRET = "sk-SECRET-123"
# Logprobs of the fake Gemini's top candidates; "yes" depends on the prompt so
# that input order is checkable.
NO_LP, MAYBE_LP = -2.5, -4.0


def _tokens(text):
    """Fake tokenizer: each token is a word with its leading whitespace."""
    return [(m.group(), m.start()) for m in re.finditer(r"\s*\S+", text)]


def _token_logprob(token):
    return -float(len(token))


def _yes_logprob(prompt):
    return -0.1 * (1 + int(prompt.removeprefix("q")))


class FakeLLMServer:
    """Imitates /v1/completions and /v1beta/models/NAME:generateContent.

    `modes` is a queue of per-request behaviours ("503", "429", "400", "401echo",
    "garbage", "missing", "hang", "safety"); `forever` applies once it is empty.
    """

    def __init__(self):
        self.modes = collections.deque()
        self.forever = None
        self.delay_s = 0.0
        self.hang_s = 1.0
        self.requests = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    def handle(self, handler):
        body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
        with self.lock:
            # Header names lower-cased: urllib sends "X-goog-api-key".
            headers = {k.lower(): v for k, v in handler.headers.items()}
            self.requests.append((handler.path, body, headers))
            mode = self.modes.popleft() if self.modes else self.forever
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.hang_s if mode == "hang" else self.delay_s)
            status, answer = self.answer(handler, mode, body)
        finally:
            # Before the reply goes out, so that the client's next request can
            # never overlap this one in the count.
            with self.lock:
                self.in_flight -= 1
        data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, handler, mode, body):
        if mode in ("503", "429", "400"):
            return int(mode), {"error": {"message": f"fake {mode}"}}
        if mode == "401echo":
            return 401, {"error": f"bad key {handler.headers.get('Authorization')}"}
        if mode == "garbage":
            return 200, b"<html>Bad gateway</html>" + b"x" * 200
        if mode == "missing":
            return 200, {"unexpected": True}
        if handler.path == "/v1/completions":
            return 200, self.completions(body)
        if re.fullmatch(r"/v1beta/models/[^/:]+:generateContent", handler.path):
            return 200, self.gemini(body, mode)
        return 404, {"error": "no such path"}

    def completions(self, body):
        prompt = body["prompt"]
        if not body.get("echo"):
            # Ignores `stop`, like some servers: the client must cut.
            return {"choices": [{"text": f"Answer to {prompt}\nmore text"}]}
        tokens = _tokens(prompt)
        logprobs = [None] + [_token_logprob(t) for t, _ in tokens[1:]]
        # The one generated token (max_tokens=1) must not be counted.
        tokens.append((" gen", len(prompt)))
        logprobs.append(-9.0)
        return {
            "choices": [
                {
                    "text": prompt + " gen",
                    "logprobs": {
                        "tokens": [t for t, _ in tokens],
                        "token_logprobs": logprobs,
                        "text_offset": [o for _, o in tokens],
                    },
                }
            ]
        }

    def gemini(self, body, mode):
        prompt = body["contents"][0]["parts"][0]["text"]
        if mode == "safety":
            return {"candidates": [{"finishReason": "SAFETY"}]}
        config = body["generationConfig"]
        if config.get("responseLogprobs"):
            top = [
                {"token": " yes", "logProbability": _yes_logprob(prompt)},
                {"token": "no", "logProbability": NO_LP},
                {"token": "Yes", "logProbability": -3.0},
                {"token": "maybe", "logProbability": MAYBE_LP},
            ]
            return {
                "candidates": [
                    {
                        "content": {"parts": [{"text": " yes"}]},
                        "logprobsResult": {
                            "topCandidates": [{"candidates": top}],
                            "chosenCandidates": [top[0]],
                        },
                    }
                ]
            }
        return {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [{"text": "Answer "}, {"text": f"to {prompt}\nmore text"}],
                    },
                    "finishReason": "STOP",
                }
            ]
        }


@pytest.fixture(name="server")
def server_fixture():
    fake = FakeLLMServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # pylint: disable=invalid-name
            try:
                fake.handle(self)
            except (BrokenPipeError, ConnectionResetError):
                pass  # The client gave up (timeout test).

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield fake
    httpd.shutdown()
    httpd.server_close()


def _openai(server, **kwargs):
    kwargs = {"timeout_s": 5.0, "max_retries": 2, "concurrency": 4, "backoff_s": 0.001, **kwargs}
    return http_backend.OpenAICompletionsBackend(f"{server.url}/v1", "fake-model", **kwargs)


def _gemini(server, **kwargs):
    kwargs = {
        "timeout_s": 5.0,
        "max_retries": 2,
        "concurrency": 4,
        "backoff_s": 0.001,
        "api_key": SECRET,
        **kwargs,
    }
    return http_backend.GeminiBackend(f"{server.url}/v1beta", "gemini-fake", **kwargs)


def test_openai_generate_in_order_cut_at_stop(server):
    prompts = [f"q{i}" for i in range(9)]
    texts = _openai(server, api_key=SECRET).generate(prompts, 16, stop=["\n"])
    assert texts == [f"Answer to q{i}" for i in range(9)]
    path, body, headers = server.requests[0]
    assert path == "/v1/completions"
    assert body["max_tokens"] == 16 and body["temperature"] == 0 and body["stop"] == ["\n"]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert server.max_in_flight <= 4


def test_openai_generate_omits_empty_stop_and_key(server):
    assert _openai(server).generate(["a"], 4) == ["Answer to a\nmore text"]
    _, body, headers = server.requests[0]
    assert "stop" not in body and "authorization" not in headers


def test_openai_score_sums_exactly_the_continuation_tokens(server):
    prompts = ["the cat", "a", "one two three"]
    continuations = [" sat on mat", " b c", " four"]
    scores = _openai(server).score(prompts, continuations)
    assert scores.dtype == np.float64
    # " sat" " on" " mat"; not the prompt's " cat" nor the generated -9.
    np.testing.assert_array_equal(scores, [-4.0 - 3.0 - 4.0, -2.0 - 2.0, -5.0])
    body = server.requests[0][1]
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1


def test_openai_score_without_continuation_tokens_raises(server, monkeypatch):
    # A server whose offsets never reach the continuation.
    monkeypatch.setattr(
        FakeLLMServer,
        "completions",
        lambda self, body: {
            "choices": [{"logprobs": {"token_logprobs": [None, -1.0], "text_offset": [0, 1]}}]
        },
    )
    with pytest.raises(LLMError, match="covered no token of the continuation"):
        _openai(server).score(["prompt"], [" continuation"])
    assert len(server.requests) == 1


def test_default_label_log_probs_scores_every_pair(server):
    log_probs = _openai(server).label_log_probs(["x", "y y"], [" ab", " c"])
    np.testing.assert_array_equal(log_probs, [[-3.0, -2.0], [-3.0, -2.0]])


def test_gemini_generate_concatenates_parts_in_order(server):
    prompts = [f"q{i}" for i in range(7)]
    stops = ["\n", "###", "Q:", "<end>", "|", "more"]
    texts = _gemini(server).generate(prompts, 32, stop=stops)
    assert texts == [f"Answer to q{i}" for i in range(7)]
    path, body, headers = server.requests[0]
    assert path == "/v1beta/models/gemini-fake:generateContent"
    assert body["contents"][0]["role"] == "user"
    # At most 5 stops go to Gemini; the rest are applied client-side.
    assert body["generationConfig"] == {"temperature": 0, "maxOutputTokens": 32, "stopSequences": stops[:5]}
    assert headers["x-goog-api-key"] == SECRET and SECRET not in path


def test_gemini_candidate_without_parts_is_empty_text(server):
    server.modes.extend(["safety"])
    assert _gemini(server).generate(["q1"], 8) == [""]
    assert len(server.requests) == 1
    assert "stopSequences" not in server.requests[0][1]["generationConfig"]


def test_gemini_label_log_probs_reads_top_candidates(server):
    prompts = [f"q{i}" for i in range(6)]
    labels = ["yes", "no", "Yes", "never"]
    log_probs = _gemini(server).label_log_probs(prompts, labels)
    assert log_probs.dtype == np.float64 and log_probs.shape == (6, 4)
    floor = MAYBE_LP - math.log(2)
    expected = [[_yes_logprob(p), NO_LP, -3.0, floor] for p in prompts]
    np.testing.assert_allclose(log_probs, expected)
    config = server.requests[0][1]["generationConfig"]
    assert config == {"temperature": 0, "maxOutputTokens": 1, "responseLogprobs": True, "logprobs": 20}


def test_gemini_score_raises(server):
    with pytest.raises(LLMError, match="--rerank_llm=gemma3-270m"):
        _gemini(server).score(["a"], ["b"])
    assert not server.requests


@pytest.mark.parametrize("failure", ["503", "429"])
def test_retries_then_succeeds(server, failure):
    server.modes.extend([failure, failure])
    assert _openai(server, max_retries=2).generate(["q"], 4) == ["Answer to q\nmore text"]
    assert len(server.requests) == 3


def test_garbage_forever_is_one_line_error(server):
    server.forever = "garbage"
    with pytest.raises(LLMError) as info:
        _openai(server, max_retries=2).generate(["q"], 4)
    message = str(info.value)
    assert "\n" not in message and "answer is not JSON: '<html>Bad gateway" in message
    assert "/v1/completions" in message and "--llm_concurrency" in message
    assert len(server.requests) == 3


def test_missing_fields_are_retried_as_garbage(server):
    server.forever = "missing"
    with pytest.raises(LLMError, match="lacks the expected fields") as info:
        _gemini(server, max_retries=1).label_log_probs(["q1"], ["yes"])
    assert "\n" not in str(info.value)
    assert len(server.requests) == 2


def test_hang_past_timeout_raises(server):
    server.forever = "hang"
    server.hang_s = 1.0
    start = time.monotonic()
    with pytest.raises(LLMError, match=r"timed out after 0\.3 s.*--llm_timeout"):
        _openai(server, timeout_s=0.3, max_retries=1).generate(["q"], 4)
    assert time.monotonic() - start < 1.5
    assert len(server.requests) == 2


def test_client_error_fails_at_once(server):
    server.forever = "400"
    with pytest.raises(LLMError, match="HTTP 400") as info:
        _openai(server, max_retries=3).generate(["q"], 4)
    assert "\n" not in str(info.value)
    assert len(server.requests) == 1


def test_api_key_never_in_error_text(server):
    server.forever = "401echo"
    with pytest.raises(LLMError, match="HTTP 401") as info:
        _openai(server, api_key=SECRET).generate(["q"], 4)
    assert SECRET not in str(info.value)


def test_connection_refused_is_retried_then_named(server):
    backend = http_backend.OpenAICompletionsBackend(
        "http://127.0.0.1:1/v1", "m", timeout_s=1.0, max_retries=1, backoff_s=0.001
    )
    with pytest.raises(LLMError, match="failed 2 times, last: connection failed"):
        backend.generate(["q"], 4)


def test_concurrency_limit_holds(server):
    server.delay_s = 0.1
    prompts = [f"q{i}" for i in range(12)]
    texts = _openai(server, concurrency=3).generate(prompts, 4, stop=["\n"])
    assert texts == [f"Answer to q{i}" for i in range(12)]
    assert server.max_in_flight == 3


def test_from_spec_openai(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    backend = http_backend.from_spec(
        "openai:google/gemma-3-27b-it@v2@http://localhost:8000/v1/",
        timeout_s=2.0,
        max_retries=1,
        concurrency=2,
        api_key=None,
    )
    assert isinstance(backend, http_backend.OpenAICompletionsBackend)
    assert backend.model == "google/gemma-3-27b-it@v2"
    assert backend.base_url == "http://localhost:8000/v1"
    assert backend._headers()["Authorization"] == "Bearer env-key"  # pylint: disable=protected-access
    assert (backend.timeout_s, backend.max_retries, backend.concurrency) == (2.0, 1, 2)


def test_from_spec_gemini(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key")
    kwargs = {"timeout_s": 1.0, "max_retries": 0, "concurrency": 1}
    backend = http_backend.from_spec("gemini:gemini-2.0-flash", api_key=None, **kwargs)
    assert isinstance(backend, http_backend.GeminiBackend)
    assert backend.base_url == http_backend.GEMINI_DEFAULT_URL
    assert backend.model == "gemini-2.0-flash"
    assert backend._headers()["x-goog-api-key"] == "google-key"  # pylint: disable=protected-access
    monkeypatch.delenv("GOOGLE_API_KEY")
    custom = http_backend.from_spec("gemini:g@https://proxy.example/v1beta", api_key=None, **kwargs)
    assert custom.base_url == "https://proxy.example/v1beta"
    assert "x-goog-api-key" not in custom._headers()  # pylint: disable=protected-access
    with pytest.raises(UserError, match="set GEMINI_API_KEY") as info:
        http_backend.from_spec("gemini:gemini-2.0-flash", api_key=None, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "spec",
    [
        "openai:",
        "openai:model",
        "openai:@http://h/v1",
        "gemini:",
        "gemini:@https://h",
        "claude:m@http://h",
        "openai:m@http://",
    ],
)
def test_from_spec_rejects_bad_specs(spec):
    with pytest.raises(UserError, match="openai:MODEL@BASE_URL") as info:
        http_backend.from_spec(spec, timeout_s=1.0, max_retries=0, concurrency=1, api_key=SECRET)
    assert "\n" not in str(info.value) and SECRET not in str(info.value)


def test_load_backend_builds_the_http_backend(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = backends.load_backend(f"openai:m@{server.url}/v1", concurrency=2)
    assert isinstance(backend, http_backend.OpenAICompletionsBackend)
    assert backend.generate(["q"], 4, stop=["\n"]) == ["Answer to q"]
