"""The requests doctor sends: Claude Code-shaped, small, one tool (Read, with Claude Code's schema)."""

from __future__ import annotations

from typing import Any

SYSTEM = "You are Claude Code, Anthropic's official CLI for Claude. Use the tools to answer."
PROMPT = "Read the file /tmp/ccgate-doctor.txt and tell me its first line. Use the Read tool."
READ_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "file_path": {"description": "The absolute path to the file to read", "type": "string"},
        "offset": {"description": "The line number to start reading from", "type": "integer", "minimum": 0},
        "limit": {"description": "The number of lines to read", "type": "integer", "exclusiveMinimum": 0},
    },
    "required": ["file_path"],
    "additionalProperties": False,
}
READ_TOOL: dict[str, Any] = {
    "name": "Read",
    "description": "Reads a file from the local filesystem. `file_path` must be an absolute path.",
    "input_schema": READ_SCHEMA,
}
MAX_TOKENS = 256
# Claude Code's first request: system prompt and tool schemas, before the user typed anything
# (measured on Claude Code 2.1.197's captured request with llama.cpp's Qwen tokenizer: ~20k).
CLAUDE_CODE_PROMPT_TOKENS = 20_000
COMFORTABLE_CONTEXT = 32_768


def anthropic_body(model: str, stream: bool, tools: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "stream": stream,
    }
    if tools:
        body["tools"] = [READ_TOOL]
    return body


def openai_body(model: str, stream: bool, tools: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if tools:
        function = {"name": "Read", "description": READ_TOOL["description"], "parameters": READ_SCHEMA}
        body["tools"] = [{"type": "function", "function": function}]
    return body


def responses_body(model: str, stream: bool, tools: bool = True) -> dict[str, Any]:
    """Codex CLI-shaped: instructions, input items, flat function tools, nothing stored."""
    body: dict[str, Any] = {
        "model": model,
        "max_output_tokens": MAX_TOKENS,
        "instructions": SYSTEM,
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]}],
        "temperature": 0,
        "store": False,
        "stream": stream,
    }
    if tools:
        body["tools"] = [
            {"type": "function", "name": "Read", "description": READ_TOOL["description"], "parameters": READ_SCHEMA}
        ]
    return body
