"""Reading OpenAI requests and streams: the prompt, its checks, and tokens counted from SSE."""

from __future__ import annotations

import json
import math
import re


class BadRequest(ValueError):
    """A client's mistake: answered with a 400 and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param,
                          "code": None}}


def parse_request(raw: bytes, *, chat: bool) -> tuple[dict, str, int | None, float]:
    """Check an OpenAI completion or chat request.

    Returns
    -------
    body : dict
    prompt_text : str
        The prompt (chat: the messages' text joined by newlines).
    prompt_ids : int or None
        Token count when the prompt came as token ids.
    max_tokens : float
        ``max_tokens`` (or ``max_completion_tokens``), ``inf`` when absent.

    Raises
    ------
    BadRequest
        Naming the field that is wrong.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    prompt_ids = None
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' is required and must be a non-empty list of messages", "messages")
        parts = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest(f"messages[{i}] must be an object with a string 'role'", "messages")
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(part.get("text", "") for part in content
                             if isinstance(part, dict) and isinstance(part.get("text", ""), str))
            elif content is not None:
                raise BadRequest(f"messages[{i}].content must be a string, a list of parts or null", "messages")
        text = "\n".join(parts)
    else:
        if "prompt" not in body:
            raise BadRequest("'prompt' is required", "prompt")
        prompt = body["prompt"]
        if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                       for t in prompt):
            prompt_ids, text = len(prompt), ""
        elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            text = prompt[0]
        elif isinstance(prompt, str):
            text = prompt
        elif isinstance(prompt, list) and len(prompt) > 1:
            raise BadRequest("a batch of prompts is not routed: send one request per prompt", "prompt")
        else:
            raise BadRequest("'prompt' must be a string or a list of token ids", "prompt")
    max_tokens = math.inf
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadRequest(f"'{key}' must be an integer, got {value!r}", key)
        if value < 1 and value != -1:                       # -1: llama.cpp's "no limit"
            raise BadRequest(f"'{key}' must be at least 1, got {value}", key)
        if value > 0:
            max_tokens = min(max_tokens, float(value))
    if "stream" in body and not isinstance(body["stream"], bool):
        raise BadRequest(f"'stream' must be true or false, got {body['stream']!r}", "stream")
    n = body.get("n", 1)
    if n is not None and n != 1:
        raise BadRequest(f"'n' must be 1 through the router (each choice is its own request), got {n!r}", "n")
    if "model" in body and not isinstance(body["model"], str):
        raise BadRequest(f"'model' must be a string, got {body['model']!r}", "model")
    return body, text, prompt_ids, max_tokens


def estimate_tokens(text: str, chars_per_token: float = 4.0) -> int:
    """Prompt tokens estimated from text: ``chars_per_token`` characters a token (default 4; at least 1)."""
    return max(1, math.ceil(len(text) / chars_per_token))


class StreamCounter:
    """Counts generated tokens in an OpenAI SSE stream fed in arbitrary byte pieces.

    A chunk whose choice carries text (``text``, ``delta.content`` or
    ``delta.reasoning_content``) counts as one token, as vLLM, SGLang and
    llama.cpp stream them; ``usage.completion_tokens``, when the stream has it,
    is the exact count and wins (:attr:`output_tokens`).
    """

    __slots__ = ("_buffer", "tokens", "usage_tokens", "finish_reason")

    def __init__(self):
        self._buffer = b""
        self.tokens = 0
        self.usage_tokens: int | None = None
        self.finish_reason: str | None = None

    @property
    def output_tokens(self) -> int:
        return self.usage_tokens if self.usage_tokens is not None else self.tokens

    def feed(self, data: bytes) -> int:
        """Take the next bytes; returns the tokens counted so far."""
        buffer = self._buffer + data
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self._buffer = buffer
            return self.tokens
        self._buffer = buffer[end + 2:]
        for line in buffer[:end].split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload or payload == b"[DONE]":
                continue
            try:
                event = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            usage = event.get("usage")
            if isinstance(usage, dict) and type(usage.get("completion_tokens")) is int \
                    and usage["completion_tokens"] >= 0:
                self.usage_tokens = usage["completion_tokens"]
            for choice in event.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                delta = choice.get("delta")
                if isinstance(delta, dict):
                    text = delta.get("content") or delta.get("reasoning_content")
                else:
                    text = choice.get("text")
                if text:
                    self.tokens += 1
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        return self.tokens


#: A flat ``usage`` object's ``completion_tokens`` (an unescaped quote never occurs inside a JSON string,
#: so this is a key, and the ``usage`` object's own while no brace comes between).
_USAGE = re.compile(rb'"usage"\s*:\s*\{[^{}]*?"completion_tokens"\s*:\s*(\d+)\s*[,}]')


def completion_tokens(body: bytes) -> int | None:
    """``usage.completion_tokens`` of a non-streaming response body, if it has one.

    Read without parsing the whole answer where the body names ``"usage"`` once and
    that object is flat up to the count (vLLM's, SGLang's and llama.cpp's are); any
    other body is parsed.
    """
    if body.count(b'"usage"') == 1:
        found = _USAGE.search(body)
        if found is not None:
            return int(found.group(1))
    try:
        usage = json.loads(body).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    value = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return value if type(value) is int and value >= 0 else None     # a bool is no count
