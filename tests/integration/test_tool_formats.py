"""Every family's tool-call format, written as text by a real llama-server under a template that
ignores tools (`--chat-template chatml`, as a user gets with a generic template), reaches the client
as a proper tool_use, whole and streamed, with no markup left in the text and its reasoning as
thinking. The scripted models are tests/harness/scripted_model.FAMILY_CALLS."""

from __future__ import annotations

import json

import httpx
import pytest

from router.protocol.aggregate import MessageAggregator
from router.protocol.sse import SSEDecoder
from tests.harness.scripted_model import FAMILY_CALLS
from tests.integration.test_passthrough import READ_TOOL
from tests.unit.test_tool_corpus import MARKUP

REASONING = {"gpt-oss", "seed-oss", "command-r7b", "nemotron", "magistral"}


def answer(gw_url: str, stream: bool) -> dict:
    body = {
        "model": "claude-opus-4-8",
        "max_tokens": 256,
        "stream": stream,
        "tools": [READ_TOOL],
        "messages": [{"role": "user", "content": "read a.txt"}],
    }
    r = httpx.post(gw_url + "/v1/messages", json=body, timeout=120)
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()
    aggregator = MessageAggregator()
    for event in SSEDecoder().feed(r.content):
        aggregator.feed(event)
    return aggregator.message()


@pytest.mark.parametrize("family", sorted(FAMILY_CALLS))
def test_a_call_written_as_text_comes_out_as_a_call(start_ccgate, start_llama_server, family: str) -> None:
    llama = start_llama_server(f"fmt-{family}", "-np", "1", "--chat-template", "chatml")
    gw = start_ccgate({"local": {"kind": "llamacpp", "url": llama.url}})
    for stream in (False, True):
        message = answer(gw.url, stream)
        where = f"{family} {'stream' if stream else 'json'}: {json.dumps(message['content'])[:300]}"
        calls = [b for b in message["content"] if b["type"] == "tool_use"]
        assert [(c["name"], c["input"]) for c in calls] == [("Read", {"file_path": "a.txt"})], where
        assert message["stop_reason"] == "tool_use", where
        texts = [b["text"] for b in message["content"] if b["type"] == "text"]
        assert not any(marker in text for text in texts for marker in MARKUP), where
        thinking = [b["thinking"] for b in message["content"] if b["type"] == "thinking"]
        assert thinking == (["Read it."] if family in REASONING else []), where
