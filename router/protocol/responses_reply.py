"""The canonical answer (Anthropic Messages, whole or streamed) → an OpenAI Responses object or
its typed `response.*` event stream (pure).

One Anthropic content block becomes one output item: thinking → `reasoning` (its text as a
summary), text → `message` with one `output_text` part, tool_use → `function_call`. Each item
is announced (`output_item.added`), filled by deltas and closed (`output_item.done`) in order;
`response.completed` carries the whole response with usage, which is what Codex CLI waits for.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from router.protocol.answer_events import AnswerEvents
from router.protocol.chat_reply import arguments_of, token_counts
from router.protocol.sse import Event, encode_event

INCOMPLETE = {"max_tokens": "max_output_tokens", "model_context_window_exceeded": "max_output_tokens"}


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def responses_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    prompt, cached, output = token_counts(usage)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }


def output_item(block: dict[str, Any]) -> dict[str, Any] | None:
    """A finished content block as a finished output item (None for blocks OpenAI has no item for)."""
    kind = block.get("type")
    if kind == "text":
        part = {"type": "output_text", "text": block.get("text", ""), "annotations": []}
        return {"type": "message", "id": _id("msg"), "status": "completed", "role": "assistant", "content": [part]}
    if kind == "thinking":
        summary = [{"type": "summary_text", "text": block.get("thinking", "")}]
        return {"type": "reasoning", "id": _id("rs"), "summary": summary}
    if kind == "tool_use":
        return {
            "type": "function_call",
            "id": _id("fc"),
            "call_id": block.get("id", ""),
            "name": block.get("name", ""),
            "arguments": arguments_of(block.get("input")),
            "status": "completed",
        }
    return None


class ResponseFrame:
    """The fields of a response object that do not depend on its output."""

    def __init__(self, request: dict[str, Any], model: str) -> None:
        self.id = _id("resp")
        self.created_at = int(time.time())
        self.model = model
        self.request = request

    def response(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None, stop: str | None
    ) -> dict[str, Any]:
        r = self.request
        incomplete = INCOMPLETE.get(stop or "") if status != "in_progress" else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "incomplete" if incomplete else status,
            "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": r.get("instructions"),
            "max_output_tokens": r.get("max_output_tokens"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": r.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "reasoning": r.get("reasoning"),
            "store": False,
            "temperature": r.get("temperature"),
            "text": r.get("text") or {"format": {"type": "text"}},
            "tool_choice": r.get("tool_choice", "auto"),
            "tools": r.get("tools") or [],
            "top_p": r.get("top_p"),
            "truncation": r.get("truncation", "disabled"),
            "usage": responses_usage(usage) if usage is not None else None,
            "user": r.get("user"),
            "metadata": r.get("metadata") or {},
        }


def response_object(message: dict[str, Any], request: dict[str, Any], model: str) -> dict[str, Any]:
    """A whole response for a whole Anthropic message."""
    frame = ResponseFrame(request, message.get("model") or model)
    output = [item for block in message.get("content") or () if (item := output_item(block)) is not None]
    return frame.response("completed", output, message.get("usage") or {}, message.get("stop_reason"))


class ResponsesStream(AnswerEvents):
    """Anthropic stream events in, typed Responses events out."""

    def __init__(self, request: dict[str, Any], model: str) -> None:
        super().__init__(model)
        self.frame = ResponseFrame(request, model)
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None  # the item being filled
        self._text: list[str] = []  # its text or arguments so far

    def feed(self, event: Event) -> list[bytes]:
        read = self.read(event)
        if read is None:
            return []
        kind, data = read
        if kind == "message_start":
            self.frame.model = self.model
            started = self.frame.response("in_progress", [], None, None)
            return [
                self._emit("response.created", response=started),
                self._emit("response.in_progress", response=started),
            ]
        if kind == "content_block_start":
            return self._start(data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(data.get("delta") or {})
        if kind == "content_block_stop":
            return self._close()
        if kind == "message_stop":
            return self.finish()
        if kind == "error":
            self.done = True
            error = data.get("error") or {}
            failed = self.frame.response("failed", self._output, self.usage, None)
            failed["error"] = {
                "code": error.get("type") or "server_error",
                "message": str(error.get("message") or "the backend's stream failed"),
            }
            return [self._emit("response.failed", response=failed)]
        return []

    def finish(self) -> list[bytes]:
        if self.done:
            return []
        self.done = True
        out = self._close()
        whole = self.frame.response("completed", self._output, self.usage, self.stop)
        name = "response.completed" if whole["status"] == "completed" else "response.incomplete"
        out.append(self._emit(name, response=whole))
        return out

    def _start(self, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        kind = block.get("type")
        if kind == "text":
            item: dict[str, Any] = {"type": "message", "id": _id("msg"), "status": "in_progress", "role": "assistant"}
            item["content"] = []
        elif kind == "thinking":
            item = {"type": "reasoning", "id": _id("rs"), "summary": []}
        elif kind == "tool_use":
            item = {
                "type": "function_call",
                "id": _id("fc"),
                "call_id": block.get("id", ""),
                "name": block.get("name", ""),
                "arguments": "",
                "status": "in_progress",
            }
        else:
            return out
        self._open, self._text = item, []
        where = {"output_index": len(self._output), "item_id": item["id"]}
        out.append(self._emit("response.output_item.added", output_index=len(self._output), item=item))
        if kind == "text":
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(self._emit("response.content_part.added", **where, content_index=0, part=part))
        elif kind == "thinking":
            part = {"type": "summary_text", "text": ""}
            out.append(self._emit("response.reasoning_summary_part.added", **where, summary_index=0, part=part))
        return out

    def _delta(self, delta: dict[str, Any]) -> list[bytes]:
        item = self._open
        if item is None:
            return []
        where = {"output_index": len(self._output), "item_id": item["id"]}
        kind = delta.get("type")
        if kind == "text_delta" and item["type"] == "message" and delta.get("text"):
            self._text.append(delta["text"])
            return [self._emit("response.output_text.delta", **where, content_index=0, delta=delta["text"])]
        if kind == "thinking_delta" and item["type"] == "reasoning" and delta.get("thinking"):
            self._text.append(delta["thinking"])
            return [
                self._emit("response.reasoning_summary_text.delta", **where, summary_index=0, delta=delta["thinking"])
            ]
        if kind == "input_json_delta" and item["type"] == "function_call" and delta.get("partial_json"):
            self._text.append(delta["partial_json"])
            return [self._emit("response.function_call_arguments.delta", **where, delta=delta["partial_json"])]
        return []

    def _close(self) -> list[bytes]:
        item = self._open
        if item is None:
            return []
        self._open = None
        text = "".join(self._text)
        where = {"output_index": len(self._output), "item_id": item["id"]}
        out: list[bytes] = []
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            out.append(self._emit("response.output_text.done", **where, content_index=0, text=text))
            out.append(self._emit("response.content_part.done", **where, content_index=0, part=part))
            item = {**item, "status": "completed", "content": [part]}
        elif item["type"] == "reasoning":
            part = {"type": "summary_text", "text": text}
            out.append(self._emit("response.reasoning_summary_text.done", **where, summary_index=0, text=text))
            out.append(self._emit("response.reasoning_summary_part.done", **where, summary_index=0, part=part))
            item = {**item, "summary": [part]}
        else:
            arguments = text or "{}"
            out.append(self._emit("response.function_call_arguments.done", **where, arguments=arguments))
            item = {**item, "arguments": arguments, "status": "completed"}
        out.append(self._emit("response.output_item.done", output_index=len(self._output), item=item))
        self._output.append(item)
        return out

    def _emit(self, name: str, **fields: Any) -> bytes:
        self._sequence += 1
        return encode_event(name, {"type": name, "sequence_number": self._sequence - 1, **fields})
