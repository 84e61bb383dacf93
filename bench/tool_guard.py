"""What the tool-call guard and the runaway guard cost per streamed token, against what every
reply already pays.

    python bench/tool_guard.py [--repeat 20]

Three answers a local model streams to Claude Code, built as real Anthropic event streams with
one event per token (~4 characters):

- prose: 2,000 tokens of explanation (Python's reference manual) with a code fence, the guard's
  common case;
- structured call: a Write tool_use whose 20 KB `content` arrives as 5,000 input_json_delta
  events, held until complete, validated against Claude Code's schema, relayed byte for byte;
- call as text: the same Write written as a Hermes `<tool_call>` in text, converted.

Each is fed through the tool-call guard in 1 KB chunks (as upstream reads arrive), through the
runaway guard (which watches text, not tool-call arguments), and through UsageTap, the usage
scanner every reply already runs, as the in-run baseline. The per-token columns put each cost
against a 50 tokens/s local model (20 ms per token).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from router.protocol.runaway_stream import RunawayGuard
from router.protocol.sse import encode_event
from router.protocol.tool_check import ToolBox
from router.protocol.tool_guard import ToolCallGuard
from router.protocol.usage import Usage, UsageTap

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "claude-code-request-turn1.json"
TOOLS = json.loads(FIXTURE.read_text())["body"]["tools"]


def _tokens(text: str) -> list[str]:
    return [text[i : i + 4] for i in range(0, len(text), 4)]


def _stream(blocks: list[tuple[str, list[str]]]) -> bytes:
    out = [encode_event("message_start", {"type": "message_start", "message": {"id": "m", "content": [], "usage": {}}})]
    for index, (kind, pieces) in enumerate(blocks):
        if kind == "text":
            block, delta_of = {"type": "text", "text": ""}, lambda p: {"type": "text_delta", "text": p}
        else:
            block = {"type": "tool_use", "id": "toolu_1", "name": "Write", "input": {}}
            delta_of = lambda p: {"type": "input_json_delta", "partial_json": p}  # noqa: E731
        out.append(
            encode_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        for piece in pieces:
            out.append(
                encode_event(
                    "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta_of(piece)}
                )
            )
        out.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}
    out += [encode_event("message_delta", stop), encode_event("message_stop", {"type": "message_stop"})]
    return b"".join(out)


def answers() -> dict[str, tuple[bytes, int]]:
    # real prose (Python's own reference documentation), not a sentence repeated: that is a runaway
    from pydoc_data.topics import topics

    reference = topics["assert"] + topics["assignment"]
    prose = reference[:3000]
    prose += "\n```python\nfor line in open(path):\n    total += len(line.split())\n```\n" + reference[3000:8000]
    content = ("def handler(event):\n    return {'ok': True}\n" * 500)[:20_000]
    arguments = json.dumps({"file_path": "/work/app/handler.py", "content": content})
    as_text = (
        "I will write the file.\n<tool_call>\n"
        + json.dumps({"name": "Write", "arguments": json.loads(arguments)})
        + "\n</tool_call>"
    )
    return {
        "prose": (_stream([("text", _tokens(prose))]), len(_tokens(prose))),
        "structured call": (_stream([("tool_use", _tokens(arguments))]), len(_tokens(arguments))),
        "call as text": (_stream([("text", _tokens(as_text))]), len(_tokens(as_text))),
    }


def _chunks(raw: bytes) -> list[bytes]:
    return [raw[i : i + 1024] for i in range(0, len(raw), 1024)]


def _guarded(chunks: list[bytes]) -> None:
    guard = ToolCallGuard(ToolBox(TOOLS))
    for chunk in chunks:
        guard.feed(chunk)
    guard.finish()


def _as_guarded(chunks: list[bytes]) -> list[bytes]:
    """What the runaway guard sees: the tool-call guard's output (a call written as text is held
    by it and comes out as a tool_use, whose arguments the runaway guard does not watch)."""
    guard = ToolCallGuard(ToolBox(TOOLS))
    out = [b"".join(guard.feed(chunk)) for chunk in chunks] + [b"".join(guard.finish())]
    return [chunk for chunk in out if chunk]


def _watched(chunks: list[bytes]) -> None:
    runaway = RunawayGuard()
    for chunk in chunks:
        runaway.feed(chunk)
    runaway.finish()


def _tapped(chunks: list[bytes]) -> None:
    tap = UsageTap(Usage())
    for chunk in chunks:
        tap.feed(chunk)


def _best(run: Callable[[list[bytes]], None], chunks: list[bytes], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run(chunks)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    header = f"{'answer':<16}{'tokens':>7}{'guard ms':>10}{'runaway ms':>12}{'UsageTap ms':>13}"
    print(header + f"{'guard':>8}{'runaway':>9}{'µs/token guard':>16}{'runaway':>9}{'of 20 ms':>10}")
    for name, (raw, tokens) in answers().items():
        chunks = _chunks(raw)
        guard = _best(_guarded, chunks, args.repeat)
        runaway = _best(_watched, _as_guarded(chunks), args.repeat)
        tap = _best(_tapped, chunks, args.repeat)
        per_token, per_token_runaway = guard / tokens * 1e6, runaway / tokens * 1e6
        print(
            f"{name:<16}{tokens:>7}{guard * 1e3:>10.2f}{runaway * 1e3:>12.2f}{tap * 1e3:>13.2f}"
            f"{guard / tap:>7.1f}x{runaway / tap:>8.1f}x{per_token:>16.1f}{per_token_runaway:>9.1f}"
            f"{(per_token + per_token_runaway) / 20_000:>10.3%}"
        )


if __name__ == "__main__":
    main()
