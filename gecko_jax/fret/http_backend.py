"""FRet's LLM behind an HTTP endpoint: OpenAI-compatible completions or Gemini.

Spec formats (see `from_spec`):

    openai:MODEL@BASE_URL     POST BASE_URL/completions (vLLM, llama.cpp, TGI,
                              OpenAI, ...); key: api_key or OPENAI_API_KEY,
                              optional, sent as `Authorization: Bearer`.
    gemini:MODEL[@BASE_URL]   POST BASE_URL/models/MODEL:generateContent; the
                              base defaults to Google's v1beta API, whose key
                              (api_key, GEMINI_API_KEY or GOOGLE_API_KEY) is
                              sent as `x-goog-api-key`, never in the URL.

MODEL may itself contain '@' (e.g. `google/gemma-3-27b-it`, `foo@v2`): the
spec splits at the last '@' that starts an http:// or https:// URL.

Every request is retried with exponential backoff (backoff_s * 2**attempt,
plus up to 25% jitter so that parallel workers do not retry in lockstep) on
connection errors, timeouts, HTTP 429 and 5xx, and on answers that are not
JSON or lack the expected fields; any other 4xx is a mistake in the request
(model name, key) that a retry cannot fix, so it fails at once. A request that
keeps failing raises `LLMError` with one line naming the endpoint, the last
problem and what to do. The prompts of one call run `concurrency` requests at
a time on a thread pool (the work is waiting on the network, so the GIL does
not matter); results come back in input order.
"""

import concurrent.futures
import http.client
import json
import math
import os
import random
import re
import time
from typing import Any, Callable, Optional, Sequence, TypeVar
import urllib.error
import urllib.request

from absl import logging
import numpy as np

from gecko_jax.errors import UserError
from gecko_jax.fret.llm import LLMBackend, LLMError

GEMINI_DEFAULT_URL = "https://generativelanguage.googleapis.com/v1beta"
_SPEC_FORMATS = "openai:MODEL@BASE_URL or gemini:MODEL[@BASE_URL]"
_URL_START = re.compile(r"@(?=https?://)")
# Gemini accepts at most 5 stop sequences; the rest are applied client-side.
_GEMINI_MAX_STOPS = 5
# Errors a parser raises on a well-formed JSON answer without the fields it
# needs: treated like a garbled answer (retried), not like a bug.
_GARBAGE_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError)

T = TypeVar("T")


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to its first stop string; servers differ in honouring `stop`."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


class _HttpBackend(LLMBackend):
    """POSTs JSON with timeouts, retries and a bounded thread pool."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: Optional[str] = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        concurrency: int = 8,
        backoff_s: float = 0.5,
    ):
        if timeout_s <= 0 or max_retries < 0 or concurrency < 1:
            raise UserError(
                f"LLM endpoint needs timeout_s > 0, max_retries >= 0 and "
                f"concurrency >= 1, got {timeout_s}, {max_retries}, {concurrency}"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_s = backoff_s
        self._api_key = api_key

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def _redact(self, text: str) -> str:
        # A server may echo request headers in its error body.
        return text.replace(self._api_key, "<api key>") if self._api_key else text

    def _post(self, url: str, payload: dict[str, Any], parse: Callable[[Any], T]) -> T:
        """POSTs `payload` to `url` and returns `parse(answer JSON)`, retrying.

        Args:
          url: the endpoint.
          payload: the JSON body.
          parse: reads the answer; a KeyError, IndexError, TypeError, ValueError
            or AttributeError from it marks the answer as garbage (retried).

        Returns:
          What `parse` returns.

        Raises:
          LLMError: a 4xx other than 429, or the retries are spent.
        """
        body = json.dumps(payload).encode("utf-8")
        advice = (
            f"check that the server is up and serves {self.model!r}; if it is "
            f"overloaded or slow, raise --llm_timeout (now {self.timeout_s:g} s) or "
            f"lower --llm_concurrency (now {self.concurrency})"
        )
        problem = ""
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(url, data=body, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                detail = _one_line(e.read().decode("utf-8", "replace"))
                problem = f"HTTP {e.code}" + (f" ({detail})" if detail else "")
                if e.code != 429 and e.code < 500:
                    raise LLMError(
                        self._redact(
                            f"{self.name}: POST {url} failed: {problem}; a retry cannot fix "
                            f"this: check the model name, the base URL and the API key"
                        )
                    ) from None
            except TimeoutError:  # A read that timed out (socket.timeout).
                problem = f"timed out after {self.timeout_s:g} s"
            except urllib.error.URLError as e:  # Connecting failed or timed out.
                problem = (
                    f"timed out after {self.timeout_s:g} s"
                    if isinstance(e.reason, TimeoutError)
                    else f"connection failed ({_one_line(str(e.reason))})"
                )
            except (OSError, http.client.HTTPException) as e:  # Reset, truncated answer.
                problem = f"connection failed ({type(e).__name__}: {_one_line(str(e))})"
            else:
                text = raw.decode("utf-8", "replace")
                try:
                    answer = json.loads(text)
                except ValueError:
                    problem = f"answer is not JSON: {text[:80]!r}"
                else:
                    try:
                        return parse(answer)
                    except _GARBAGE_ERRORS as e:
                        problem = (
                            f"answer lacks the expected fields ({type(e).__name__}: "
                            f"{_one_line(str(e), 80)}): {text[:80]!r}"
                        )
            if attempt < self.max_retries:
                delay = self.backoff_s * 2**attempt * (1 + 0.25 * random.random())
                logging.warning(
                    "%s: POST %s: %s; retry %d/%d in %.2f s",
                    self.name,
                    url,
                    self._redact(problem),
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
        raise LLMError(
            self._redact(
                f"{self.name}: POST {url} failed {self.max_retries + 1} times, last: {problem}; {advice}"
            )
        )

    def _map(self, fn: Callable[..., T], *columns: Sequence[Any]) -> list[T]:
        """`[fn(*row) for row in zip(*columns)]`, `concurrency` rows at a time."""
        rows = list(zip(*columns))
        if self.concurrency == 1 or len(rows) <= 1:
            return [fn(*row) for row in rows]
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.concurrency, len(rows)))
        try:
            futures = [pool.submit(fn, *row) for row in rows]
            return [f.result() for f in futures]
        finally:
            # After a failure, rows not yet started are dropped rather than each
            # spending its own retries against an endpoint that is already down.
            pool.shutdown(wait=True, cancel_futures=True)


class OpenAICompletionsBackend(_HttpBackend):
    """An OpenAI-compatible legacy completions endpoint (`/v1/completions`)."""

    def __init__(self, base_url: str, model: str, **kwargs):
        super().__init__(base_url, model, **kwargs)
        self.name = f"openai:{model}@{self.base_url}"

    def _headers(self):
        headers = super()._headers()
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def generate(self, prompts, max_new_tokens, stop=()):
        stop = list(stop)

        def parse(answer):
            text = answer["choices"][0]["text"]
            if not isinstance(text, str):
                raise TypeError(f"choices[0].text is {type(text).__name__}")
            return _cut_at_stop(text, stop)

        def one(prompt):
            payload = {"model": self.model, "prompt": prompt, "max_tokens": max_new_tokens, "temperature": 0}
            if stop:
                payload["stop"] = stop
            return self._post(f"{self.base_url}/completions", payload, parse)

        return self._map(one, prompts)

    def score(self, prompts, continuations):
        # The endpoint echoes the prompt with the log-probability of each of its
        # tokens; the continuation's log P is the sum over its tokens. A token that
        # straddles the prompt/continuation boundary starts inside the prompt and is
        # left out: the tokenizer merged the two, so neither side owns it.
        def one(prompt, continuation):
            start, end = len(prompt), len(prompt) + len(continuation)
            payload = {
                "model": self.model,
                "prompt": prompt + continuation,
                "max_tokens": 1,
                "echo": True,
                "logprobs": 1,
                "temperature": 0,
            }

            def parse(answer):
                logprobs = answer["choices"][0]["logprobs"]
                values, offsets = logprobs["token_logprobs"], logprobs["text_offset"]
                if len(values) != len(offsets):
                    raise ValueError("token_logprobs and text_offset differ in length")
                # text_offset counts characters of the prompt; the generated token
                # (max_tokens=1) starts at `end` and is excluded.
                picked = [float(v) for v, o in zip(values, offsets) if v is not None and start <= o < end]
                if not picked and continuation:
                    raise LLMError(
                        f"{self.name}: the server's echo/logprobs answer covered no token of the "
                        f"continuation {continuation[:40]!r}; it must support echo=true with "
                        f"logprobs on /completions (vLLM does; many servers do not)"
                    )
                return math.fsum(picked)

            return self._post(f"{self.base_url}/completions", payload, parse)

        return np.asarray(self._map(one, prompts, continuations), dtype=np.float64)


class GeminiBackend(_HttpBackend):
    """Gemini's `models/MODEL:generateContent` (or a server imitating it)."""

    def __init__(self, base_url: str, model: str, **kwargs):
        super().__init__(base_url, model.removeprefix("models/"), **kwargs)
        self.name = f"gemini:{self.model}@{self.base_url}"
        self._url = f"{self.base_url}/models/{self.model}:generateContent"

    def _headers(self):
        headers = super()._headers()
        if self._api_key:
            headers["x-goog-api-key"] = self._api_key
        return headers

    def _request(self, prompt: str, config: dict[str, Any]) -> dict[str, Any]:
        return {
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {"temperature": 0, **config},
        }

    def generate(self, prompts, max_new_tokens, stop=()):
        stop = [s for s in stop if s]
        config = {"maxOutputTokens": max_new_tokens}
        if stop:
            config["stopSequences"] = stop[:_GEMINI_MAX_STOPS]

        def parse(answer):
            candidates = answer.get("candidates")
            if not candidates:
                if "promptFeedback" in answer:  # The prompt itself was blocked.
                    return ""
                raise KeyError("candidates")
            # A candidate stopped for SAFETY etc. has no parts: "" is an answer,
            # which the pipeline counts as unparseable, not an endpoint failure.
            parts = candidates[0].get("content", {}).get("parts", [])
            return "".join(part.get("text", "") for part in parts)

        def one(prompt):
            return _cut_at_stop(self._post(self._url, self._request(prompt, config), parse), stop)

        return self._map(one, prompts)

    def score(self, prompts, continuations):
        raise LLMError(
            f"{self.name}: generateContent gives no log-probabilities of given text, so query-"
            f"likelihood reranking needs a local model or an OpenAI-compatible endpoint: use "
            f"--rerank_llm=gemma3-270m or --rerank_llm=openai:MODEL@URL"
        )

    def label_log_probs(self, prompts, labels):
        # One generated token with its 20 most likely alternatives: every label
        # is read from that list, so N requests instead of N * len(labels).
        config = {"maxOutputTokens": 1, "responseLogprobs": True, "logprobs": 20}
        wanted = [label.strip() for label in labels]

        def parse(answer):
            candidates = answer["candidates"][0]["logprobsResult"]["topCandidates"][0]["candidates"]
            found = [(c["token"].strip(), float(c["logProbability"])) for c in candidates]
            if not found:
                raise ValueError("topCandidates[0].candidates is empty")
            # A label missing from the top list is rarer than every listed token;
            # half the least likely one's probability is a bound that keeps it
            # ranked below all of them without inventing a mass for the tail.
            floor = min(lp for _, lp in found) - math.log(2)
            first = {}
            for token, lp in found:
                first.setdefault(token, lp)
            return [first.get(label, floor) for label in wanted]

        rows = self._map(lambda p: self._post(self._url, self._request(p, config), parse), prompts)
        return np.asarray(rows, dtype=np.float64).reshape(len(prompts), len(labels))


def from_spec(
    spec: str,
    *,
    timeout_s: float,
    max_retries: int,
    concurrency: int,
    api_key: Optional[str],
    backoff_s: float = 0.5,
) -> LLMBackend:
    """Builds the HTTP backend a spec names (see the module docstring).

    Args:
      spec: `openai:MODEL@BASE_URL` or `gemini:MODEL[@BASE_URL]`.
      timeout_s: seconds before a request is abandoned and retried.
      max_retries: retries of a failed request.
      concurrency: requests in flight at once.
      api_key: the endpoint's key; None reads OPENAI_API_KEY (openai) or
        GEMINI_API_KEY, then GOOGLE_API_KEY (gemini).
      backoff_s: the first retry's delay; later ones double.

    Returns:
      An `OpenAICompletionsBackend` or a `GeminiBackend`.

    Raises:
      UserError: a malformed spec, or no key for Google's Gemini API.
    """
    scheme, sep, rest = spec.partition(":")
    if not sep or scheme not in ("openai", "gemini") or not rest:
        raise UserError(f"bad LLM spec {spec!r}: expected {_SPEC_FORMATS}")
    splits = list(_URL_START.finditer(rest))
    if splits:
        model, base_url = rest[: splits[-1].start()], rest[splits[-1].end() :]
    else:
        model, base_url = rest, ""
    if not model or (base_url and not re.match(r"https?://[^/\s]+", base_url)):
        raise UserError(f"bad LLM spec {spec!r}: expected {_SPEC_FORMATS}")
    kwargs = dict(timeout_s=timeout_s, max_retries=max_retries, concurrency=concurrency, backoff_s=backoff_s)
    if scheme == "openai":
        if not base_url:
            raise UserError(
                f"bad LLM spec {spec!r}: an openai spec needs its server, "
                f"openai:MODEL@BASE_URL, e.g. openai:google/gemma-3-27b-it@"
                f"http://localhost:8000/v1"
            )
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        return OpenAICompletionsBackend(base_url, model, api_key=key, **kwargs)
    key = api_key or os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or None
    if not base_url:
        base_url = GEMINI_DEFAULT_URL
    if key is None and base_url.rstrip("/") == GEMINI_DEFAULT_URL:
        raise UserError(f"LLM spec {spec!r} uses Google's Gemini API, which needs a key: set GEMINI_API_KEY")
    return GeminiBackend(base_url, model, api_key=key, **kwargs)
