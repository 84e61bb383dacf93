"""The smallest HTTP/1.1 server the test doubles need: full control of every byte they send."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

REASONS = {200: "OK", 302: "Found", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


def sse(event: str | None, data: Any) -> bytes:
    line = f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"
    return (f"event: {event}\n" + line).encode() if event else line.encode()


class TinyServer:
    """Subclasses answer in `answer`; it returns whether the connection stays open."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen(method, path, headers)
                keep = await self.answer(method, path.split("?")[0], headers, body, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def seen(self, method: str, target: str, headers: dict[str, str]) -> None:
        """Every request as it came (its target with the query), before `answer`."""

    async def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        raise NotImplementedError

    async def send(
        self, writer: asyncio.StreamWriter, status: int, kind: str, body: bytes, extra: dict[str, str] | None = None
    ) -> bool:
        reason = REASONS[status]
        head = [f"HTTP/1.1 {status} {reason}", f"content-type: {kind}", f"content-length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return True

    async def send_json(self, writer: asyncio.StreamWriter, status: int, payload: Any) -> bool:
        return await self.send(writer, status, "application/json", json.dumps(payload).encode())


def serve(server: TinyServer) -> None:
    """`python -m tests.harness.<module> --port N`: serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port

    async def main() -> None:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", port)
        async with listener:
            await listener.serve_forever()

    asyncio.run(main())
