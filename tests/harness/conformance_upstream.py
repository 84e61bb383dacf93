"""An upstream that breaks HTTP/1.1 on purpose, one way per request, to prove that ccgate's
upstream client never hands one caller's answer to another and never sends a request twice.

`python -m tests.harness.conformance_upstream --port N` answers `POST /v1/messages` and
`POST /v1/chat/completions`. The request's `model` names the case; its first user message is the
caller's nonce, and a good answer says `answer for <nonce>`, so a test sees at once whose answer
a client got. Every request that arrives is counted by nonce (`GET /_log`): a nonce counted
twice is a request sent twice.

| model              | what the upstream does                                                       |
| ------------------ | ---------------------------------------------------------------------------- |
| `ok`               | a good answer on a kept-alive connection                                     |
| `info-100`         | `100 Continue`, then the answer once another request has arrived (≤ 3 s)     |
| `info-103`         | `103 Early Hints` with a link header, then the same                          |
| `two-in-one-read`  | the answer and, in the same write, a second response (someone else's)       |
| `unsolicited`      | the answer; then, on the idle kept-alive connection, a response nobody asked for |
| `close-mid-head`   | half a status line and headers, then the connection closed                   |
| `close-mid-body`   | the head and half the body (its length said), then closed                    |
| `chunked-trailers` | a good answer, chunked, with trailer fields after the last chunk              |
| `gzip-bomb`        | `content-encoding: gzip`, 1 MiB that inflates to 1 GiB of zeros              |
| `deflate-bomb`     | `content-encoding: deflate`, the same as zlib                                |
| `malformed-head`   | a status line that is not HTTP                                               |
| `body-longer`      | more body than its content-length: the rest is a second response             |
| `body-shorter`     | less body than its content-length, then closed                               |
| `info-then-close`  | `102 Processing`, then the connection closed without an answer               |
| `utf8-header`      | a good answer whose `request-id` header is UTF-8 (an emoji), not latin-1     |

`--host` binds another address than 127.0.0.1. With `--tls-cert FILE --tls-key FILE` it serves
HTTPS; with `--client-ca FILE` too, it accepts only clients whose certificate that CA signed.

`GET /_log` → `{"received": {nonce: count}, "unsolicited": n, "team_keys": k}` (`n`: responses
written on an idle connection so far; `k`: requests that carried a team key in any header or the query),
`GET /health` → 200.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import zlib
from collections import Counter
from urllib.parse import unquote

from tests.harness.tiny_http import TinyServer, sse

CASES = (
    "info-100",
    "info-103",
    "two-in-one-read",
    "unsolicited",
    "close-mid-head",
    "close-mid-body",
    "chunked-trailers",
    "gzip-bomb",
    "deflate-bomb",
    "malformed-head",
    "body-longer",
    "body-shorter",
    "info-then-close",
    "utf8-header",
)
HOLD = 3.0  # seconds a 1xx case waits for another request before it answers anyway
BOMB_INFLATED = 1 << 30


def answer_text(nonce: str) -> str:
    return f"answer for {nonce}"


def _nonce(request: dict) -> str:
    for message in request.get("messages") or ():
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def payload(nonce: str, openai: bool, stream: bool) -> tuple[str, bytes]:
    """(content-type, body) of a good answer saying `answer for <nonce>`."""
    text = answer_text(nonce)
    if openai and stream:

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            body = {"id": "c", "object": "chat.completion.chunk", "model": "conformance"}
            return sse(None, {**body, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        events = [chunk({"role": "assistant", "content": ""}), chunk({"content": text}), chunk({}, "stop")]
        return "text/event-stream", b"".join(events) + sse(None, "[DONE]")
    if openai:
        message = {"role": "assistant", "content": text}
        completion = {
            "id": "chatcmpl-c",
            "object": "chat.completion",
            "model": "conformance",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
        }
        return "application/json", json.dumps(completion).encode()
    message = {
        "id": "msg_c",
        "type": "message",
        "role": "assistant",
        "model": "conformance",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 4},
    }
    if not stream:
        return "application/json", json.dumps(message).encode()
    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 5, "output_tokens": 1}}
    block = {"type": "text", "text": ""}
    events = [
        sse("message_start", {"type": "message_start", "message": start}),
        sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    return "text/event-stream", b"".join(events)


def response(kind: str, body: bytes, extra: str = "") -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body  # UTF-8: an `extra` header may carry what latin-1 cannot


_bombs: dict[str, bytes] = {}


def bomb(encoding: str) -> bytes:
    """1 GiB of zeros, compressed (about 1 MiB), made once."""
    if encoding not in _bombs:
        packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
        zeros = bytes(1 << 20)
        _bombs[encoding] = b"".join(packer.compress(zeros) for _ in range(BOMB_INFLATED >> 20)) + packer.flush()
    return _bombs[encoding]


class Conformance(TinyServer):
    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.unsolicited = 0
        self.team_keys = 0  # requests that carried a team key (`ccg-...`) in any header
        self.arrived = asyncio.Condition()
        self.arrivals = 0

    def seen(self, method: str, target: str, headers: dict[str, str]) -> None:
        self.team_keys += any("ccg-" in v for v in headers.values()) or "ccg-" in unquote(target)

    async def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        if method == "GET":
            await self.get(path, writer)
            return True
        return await self.post(path, json.loads(body or b"{}"), writer)

    async def get(self, path: str, writer: asyncio.StreamWriter) -> None:
        known = {
            "/health": {"status": "ok"},
            "/_log": {"received": dict(self.received), "unsolicited": self.unsolicited, "team_keys": self.team_keys},
            "/v1/models": {"object": "list", "data": [{"id": "conformance", "object": "model"}]},
        }
        body = json.dumps(known.get(path, {"error": {"message": "not found"}})).encode()
        writer.write(response("application/json", body))
        await writer.drain()

    async def post(self, path: str, request: dict, writer: asyncio.StreamWriter) -> bool:
        """Answer as the case says; whether the connection stays open for another request."""
        nonce = _nonce(request)
        case = str(request.get("model", "ok"))
        self.received[nonce] += 1
        async with self.arrived:
            self.arrivals += 1
            self.arrived.notify_all()
        openai = path.endswith("/chat/completions")
        kind, good = payload(nonce, openai, bool(request.get("stream")))
        stale = payload(f"STALE-{nonce}", openai, bool(request.get("stream")))[1]
        if case in ("info-100", "info-103"):
            if case == "info-100":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            await self._another_request(self.arrivals)
            writer.write(response(kind, good))
        elif case == "two-in-one-read":
            writer.write(response(kind, good) + response(kind, stale))
        elif case == "unsolicited":
            writer.write(response(kind, good))
            await writer.drain()  # the answer has gone; the stray one follows it on its own
            writer.write(response(kind, stale))
            await writer.drain()
            self.unsolicited += 1
            return True
        elif case == "close-mid-head":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: appl")
            await writer.drain()
            return False
        elif case == "close-mid-body":
            writer.write(response(kind, good)[: -len(good) // 2])
            await writer.drain()
            return False
        elif case == "chunked-trailers":
            pieces = [good[i : i + 40] for i in range(0, len(good), 40)]
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
            head = (
                f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
            )
            writer.write(head.encode() + chunks + b"0\r\nx-checksum: 1234\r\n\r\n")
        elif case in ("gzip-bomb", "deflate-bomb"):
            encoding = case.split("-")[0]
            writer.write(response(kind, bomb(encoding), f"content-encoding: {encoding}\r\n"))
        elif case == "malformed-head":
            writer.write(b"HTTQ/1.1 2OO OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        elif case == "body-longer":
            whole = response(kind, good)
            writer.write(whole + response(kind, stale))
        elif case == "info-then-close":
            writer.write(b"HTTP/1.1 102 Processing\r\n\r\n")
            await writer.drain()
            return False
        elif case == "utf8-header":
            writer.write(response(kind, good, "request-id: req-\N{GRINNING FACE}\r\n"))
        elif case == "body-shorter":
            head = f"HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {len(good) + 100}\r\n\r\n"
            writer.write(head.encode() + good)
            await writer.drain()
            return False
        else:
            writer.write(response(kind, good))
        await writer.drain()
        return True

    async def _another_request(self, seen: int) -> None:
        """Until a request after this one has arrived (on any connection), or HOLD seconds."""
        async with self.arrived:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait_for(lambda: self.arrivals > seen), HOLD)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca")
    args = parser.parse_args()
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            tls.load_verify_locations(args.client_ca)
            tls.verify_mode = ssl.CERT_REQUIRED
    server = Conformance()

    async def run() -> None:
        listener = await asyncio.start_server(server.handle, args.host, args.port, ssl=tls)
        async with listener:
            await listener.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
