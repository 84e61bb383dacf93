"""A cloud that bills: the Anthropic Messages API's usage fields, and a ledger of what it billed.

`python -m tests.harness.billing_upstream --port N` answers `POST /v1/messages` (streamed or not)
as the API does, usage included: `input_tokens` is the prompt's size (its messages' JSON at 3.8
bytes a token, so that a gateway's estimate of it is about right), and the request's model name
may say the rest: `bill-cw30000-cw1h0-cr2000-out50` (cache writes, 5-minute and 1-hour; cache
reads; output tokens; an `in` part overrides the input); `fail` in it: HTTP 500, nothing billed.
The answer's text is `out` tokens long (4 characters each). A streamed answer with `slow` in its
model name writes one delta every 5 ms, so that a client can leave half-way.

`GET /_billed` → every answer's bill: `{"id", "input", "cache_write", "cache_write_1h", "cached",
"output", "whole"}`, `whole` false when the client went before the last event (the API bills the
output it generated all the same: here, all of it). `GET /health` → 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re

from tests.harness.tiny_http import TinyServer, sse


def bill_of(request: dict) -> dict:
    model = str(request.get("model", ""))
    said = {k: int(v) for k, v in re.findall(r"(in|cw1h|cw|cr|out)(\d+)", model)}
    size = len(json.dumps(request.get("messages") or [], separators=(",", ":")))
    return {
        "input": said.get("in", math.ceil(size / 3.8)),
        "cache_write": said.get("cw", 0),
        "cache_write_1h": said.get("cw1h", 0),
        "cached": said.get("cr", 0),
        "output": said.get("out", 20),
    }


def usage_of(bill: dict, output: int) -> dict:
    return {
        "input_tokens": bill["input"],
        "cache_creation_input_tokens": bill["cache_write"] + bill["cache_write_1h"],
        "cache_read_input_tokens": bill["cached"],
        "cache_creation": {
            "ephemeral_5m_input_tokens": bill["cache_write"],
            "ephemeral_1h_input_tokens": bill["cache_write_1h"],
        },
        "output_tokens": output,
    }


class Billing(TinyServer):
    def __init__(self) -> None:
        self.billed: list[dict] = []

    async def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if method == "GET":
            known = {"/health": {"status": "ok"}, "/_billed": self.billed, "/v1/models": {"data": []}}
            return await self.send_json(writer, 200 if path in known else 404, known.get(path, {}))
        request = json.loads(body or b"{}")
        if "fail" in str(request.get("model", "")):
            error = {"type": "error", "error": {"type": "api_error", "message": "the billing cloud failed"}}
            return await self.send_json(writer, 500, error)
        bill = {"id": f"msg_bill_{len(self.billed)}", **bill_of(request), "whole": False}
        self.billed.append(bill)
        text = "word" * bill["output"]
        message = {
            "id": bill["id"],
            "type": "message",
            "role": "assistant",
            "model": "claude-billing-1",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage_of(bill, bill["output"]),
        }
        if not request.get("stream"):
            bill["whole"] = True
            return await self.send_json(writer, 200, message)
        start = {**message, "content": [], "stop_reason": None, "usage": usage_of(bill, 1)}
        block = {"type": "text", "text": ""}
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        writer.write(sse("message_start", {"type": "message_start", "message": start}))
        writer.write(sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}))
        slow = "slow" in str(request.get("model", ""))
        for at in range(0, len(text), 40):
            delta = {"type": "text_delta", "text": text[at : at + 40]}
            writer.write(sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
            await writer.drain()
            if slow:
                await asyncio.sleep(0.005)  # the model's own pace: a client can leave half-way
        writer.write(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
        ending = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": len(text) // 4},
        }
        writer.write(sse("message_delta", ending))
        writer.write(sse("message_stop", {"type": "message_stop"}))
        await writer.drain()
        bill["whole"] = True
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    server = Billing()

    async def run() -> None:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", port)
        async with listener:
            await listener.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
