"""Tiny deterministic GGUF models that replay a script through a real llama-server.

No model can be downloaded here, so the tests build their own. The model is a one-layer
`llama` whose attention and FFN contribute nothing (value/output/down weights are zero): the
residual stream is the token embedding. Embeddings are one-hot in a few dimensions and the
output matrix maps each dimension to the token that must follow, so the next token is a fixed
function of the current one and greedy decoding replays a script.

Tokens that start or continue a script get a dimension of their own; every other token shares
dimension 0, whose successor is `<|im_end|>` (end of generation).

The vocabulary is SPM: `<unk>`, control tokens, the 256 byte tokens, whole-string script
tokens, and every prefix of the most frequent words of a real Claude Code prompt
(`wordpieces.txt`), scored so longer pieces win; that keeps a Claude Code prompt near the
token count of a real tokenizer instead of ~99k byte tokens.

The chat template is Qwen/Hermes-shaped (`<tools>`, `<tool_call>`), so llama-server's own
tool-call parser turns the scripted `<tool_call>` text into structured calls. When a tool
result came after the last assistant message, the generation prompt ends with the control
token `<|after_tool|>` instead of the bare newline, so one model can script a whole agent
turn: a tool call first, final text after the tool result.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
WORDPIECES = HERE / "wordpieces.txt"

UNK, IM_START, IM_END, AFTER_TOOL = "<unk>", "<|im_start|>", "<|im_end|>", "<|after_tool|>"
CONTROL_TOKENS = [UNK, IM_START, IM_END, AFTER_TOOL]
NEWLINE_BYTE = "<0x0A>"

TOOL_CALL = '<tool_call>\n{"name": "Read", "arguments": {"file_path": "a.txt"}}\n</tool_call>'
TOOL_FINAL = "The file a.txt says hi."
TEXT_REPLY = "Hello from the scripted model."
# One brace too many: with tools, llama-server's grammar ends at the object's close and then
# fails on the rest of the token ("Unexpected empty grammar stack": HTTP 500, or an error event
# first when streaming), the malformed-call failure seen with real local models.
BROKEN_CALL = '<tool_call>\n{"name": "Read", "arguments": {"file_path": "a.txt"}}}\n</tool_call>'
# Prose, then a call whose argument is misnamed (`path`, not `file_path`): with a template that
# ignores tools, the prose reaches the client before the guard can judge the call.
CHATTY_CALL = 'Let me check that file.\n<tool_call>\n{"name": "Read", "arguments": {"path": "a.txt"}}\n</tool_call>'
# The agents' own file and shell tools: Opencode's `read` (filePath), Codex CLI's `exec_command`.
OPENCODE_CALL = '<tool_call>\n{"name": "read", "arguments": {"filePath": "a.txt"}}\n</tool_call>'
CODEX_CALL = '<tool_call>\n{"name": "exec_command", "arguments": {"cmd": "cat a.txt"}}\n</tool_call>'
# Qwen Code's `read_file` takes only absolute paths inside its workspace: the test's project is here.
QWEN_PROJECT = "/tmp/ccgate-qwen-code"
QWEN_CALL = '<tool_call>\n{"name": "read_file", "arguments": {"file_path": "' + QWEN_PROJECT + '/a.txt"}}\n</tool_call>'
# A tool no agent offers: llama-server's grammar refuses it (HTTP 500), Opencode would retry.
UNOFFERED_CALL = '<tool_call>\n{"name": "Teleport", "arguments": {"to": "mars"}}\n</tool_call>'
LOOP_WORD = " loop"
# An answer, then another family's end-of-turn markup written out as text, and what follows it.
LEAKY_REPLY = "The answer is 42.<end_of_turn>\n<start_of_turn>user\nand now something else"
# A Read call whose argument is the input of the ReDoS report: 29 a's and a stop, on
# which `^(a+)+$` made Python's backtracking `re` work for 19.5 s.
LONG_ARG_CALL = '<tool_call>\n{"name": "Read", "arguments": {"file_path": "' + "a" * 29 + '!"}}\n</tool_call>'

CHAT_TEMPLATE = """\
{%- set ns = namespace(after_tool=false) -%}
{%- for message in messages -%}
  {%- if message.role == 'assistant' -%}{%- set ns.after_tool = false -%}
  {%- elif message.role == 'tool' -%}{%- set ns.after_tool = true -%}{%- endif -%}
{%- endfor -%}
{%- if tools -%}
  {{- '<|im_start|>system\\n' -}}
  {%- if messages[0].role == 'system' -%}{{- messages[0].content -}}{%- endif -%}
  {{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' -}}
  {{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
  {%- for tool in tools -%}{{- '\\n' -}}{{- tool | tojson -}}{%- endfor -%}
  {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and ' -}}
  {{- 'arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n' -}}
  {{- '{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}
{%- elif messages[0].role == 'system' -%}
  {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
  {%- if message.role == 'user' or (message.role == 'system' and not loop.first)
        or (message.role == 'assistant' and not message.tool_calls) -%}
    {{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' -}}
  {%- elif message.role == 'assistant' -%}
    {{- '<|im_start|>assistant' -}}
    {%- if message.content -%}{{- '\\n' + message.content -}}{%- endif -%}
    {%- for tool_call in message.tool_calls -%}
      {%- if tool_call.function is defined -%}{%- set tool_call = tool_call.function -%}{%- endif -%}
      {{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' -}}
      {%- if tool_call.arguments is string -%}{{- tool_call.arguments -}}
      {%- else -%}{{- tool_call.arguments | tojson -}}{%- endif -%}
      {{- '}\\n</tool_call>' -}}
    {%- endfor -%}
    {{- '<|im_end|>\\n' -}}
  {%- elif message.role == 'tool' -%}
    {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}
    {{- '\\n<tool_response>\\n' + (message.content or '') + '\\n</tool_response>' -}}
    {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\\n' -}}
  {%- if ns.after_tool -%}{{- '<|after_tool|>' -}}{%- endif -%}
{%- endif -%}
"""


# The same template for a model that reasons: an assistant turn's reasoning_content is rendered
# in <think> tags, which is how llama-server's template analysis finds the reasoning markers
# (and then parses <think>...</think> in the model's output into reasoning_content).
REASONING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' -}}",
    "{{- '<|im_start|>' + message.role + '\\n' -}}"
    "{%- if message.reasoning_content -%}"
    "{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' -}}{%- endif -%}"
    "{{- (message.content or '') + '<|im_end|>\\n' -}}",
).replace(
    "{{- '<|im_start|>assistant' -}}",
    "{{- '<|im_start|>assistant' -}}"
    "{%- if message.reasoning_content -%}"
    "{{- '\\n<think>\\n' + message.reasoning_content + '\\n</think>\\n' -}}{%- endif -%}",
)
THINKING = "<think>\nI should read a.txt first.\n</think>\n\n"
THINKING_AFTER = "<think>\nThe tool said hi.\n</think>\n\n"


@dataclass(frozen=True)
class Script:
    """What follows what: `successors[token] = next token`; anything else ends the turn."""

    name: str
    successors: dict[str, str]
    template: str = CHAT_TEMPLATE


# A Read call of a.txt as each family writes it when nothing parses it (tests/unit/tool_corpus has
# more of each). DeepSeek's markers hold U+2581, which this vocabulary turns into spaces: its
# format is covered by the corpus only.
READ_ARGS = '{"file_path": "a.txt"}'
FAMILY_CALLS = {
    "gpt-oss": "<|channel|>analysis<|message|>Read it.<|end|><|start|>assistant<|channel|>commentary "
    f"to=functions.Read <|constrain|>json<|message|>{READ_ARGS}<|call|>",
    "kimi-k2": "<|tool_calls_section_begin|><|tool_call_begin|>functions.Read:0<|tool_call_argument_begin|>"
    f"{READ_ARGS}<|tool_call_end|><|tool_calls_section_end|>",
    "glm": "<tool_call>Read\n<arg_key>file_path</arg_key>\n<arg_value>a.txt</arg_value>\n</tool_call>",
    "minimax-m2": '<minimax:tool_call>\n<invoke name="Read">\n<parameter name="file_path">a.txt</parameter>\n'
    "</invoke>\n</minimax:tool_call>",
    "seed-oss": "<seed:think>Read it.</seed:think>\n<seed:tool_call>\n<function=Read>\n<parameter=file_path>a.txt"
    "</parameter>\n</function>\n</seed:tool_call>",
    "command-r7b": "<|START_THINKING|>Read it.<|END_THINKING|><|START_ACTION|>"
    f'[{{"tool_call_id": "0", "tool_name": "Read", "parameters": {READ_ARGS}}}]<|END_ACTION|>',
    "granite": f'<|tool_call|>[{{"name": "Read", "arguments": {READ_ARGS}}}]',
    "phi-4": f'<|tool_call|>[{{"name": "Read", "arguments": {READ_ARGS}}}]<|/tool_call|>',
    "nemotron": f'<think>Read it.</think>\n<TOOLCALL>[{{"name": "Read", "arguments": {READ_ARGS}}}]</TOOLCALL>',
    "lfm2": '<|tool_call_start|>[Read(file_path="a.txt")]<|tool_call_end|>',
    "apertus": f'<|tools_prefix|>[{{"Read": {READ_ARGS}}}]<|tools_suffix|>',
    "qwen2.5-coder": f'<tools>\n{{"name": "Read", "arguments": {READ_ARGS}}}\n</tools>',
    "functionary-v3.1": f"<function=Read>{READ_ARGS}</function>",
    "functionary-v3.2": f">>>Read\n{READ_ARGS}",
    "firefunction": f' functools[{{"name": "Read", "arguments": {READ_ARGS}}}]',
    "magistral": f"[THINK]Read it.[/THINK][TOOL_CALLS]Read[ARGS]{READ_ARGS}",
}


def _busy_cycle() -> dict[str, str]:
    """A long cycle of distinct words: it keeps a slot busy until max_tokens, like `loop`, but its
    period (~1,300 characters) is longer than what the runaway guard looks for, as real text's is."""
    words = [w for w in WORDPIECES.read_text(encoding="utf-8").splitlines() if w.startswith("\u2581") and len(w) >= 9]
    cycle = list(dict.fromkeys(words))[:150]
    successors = {NEWLINE_BYTE: cycle[0], AFTER_TOOL: cycle[0]}
    successors.update(zip(cycle, [*cycle[1:], cycle[0]], strict=True))
    return successors


def _reply(start: str, reply: str) -> dict[str, str]:
    return {start: _piece(reply), _piece(reply): IM_END}


def _piece(text: str) -> str:
    return text.replace(" ", "\u2581")


SCRIPTS: dict[str, Script] = {
    "tool": Script("tool", {**_reply(NEWLINE_BYTE, TOOL_CALL), **_reply(AFTER_TOOL, TOOL_FINAL)}),
    "text": Script("text", {**_reply(NEWLINE_BYTE, TEXT_REPLY), **_reply(AFTER_TOOL, TEXT_REPLY)}),
    "broken": Script("broken", _reply(NEWLINE_BYTE, BROKEN_CALL)),
    "chatty": Script("chatty", _reply(NEWLINE_BYTE, CHATTY_CALL)),
    "long_arg": Script("long_arg", _reply(NEWLINE_BYTE, LONG_ARG_CALL)),
    # reasons, calls Read; after the tool result reasons again and answers
    "think_tool": Script(
        "think_tool",
        {**_reply(NEWLINE_BYTE, THINKING + TOOL_CALL), **_reply(AFTER_TOOL, THINKING_AFTER + TOOL_FINAL)},
        REASONING_TEMPLATE,
    ),
    # reasons, calls Read; after the tool result writes a malformed call (llama-server: HTTP 500),
    # so the tool loop's next turn moves to the fallback: a handoff in the middle of a tool loop
    "think_break": Script(
        "think_break",
        {**_reply(NEWLINE_BYTE, THINKING + TOOL_CALL), **_reply(AFTER_TOOL, BROKEN_CALL)},
        REASONING_TEMPLATE,
    ),
    "busy": Script("busy", _busy_cycle()),
    "opencode": Script("opencode", {**_reply(NEWLINE_BYTE, OPENCODE_CALL), **_reply(AFTER_TOOL, TOOL_FINAL)}),
    "codex": Script("codex", {**_reply(NEWLINE_BYTE, CODEX_CALL), **_reply(AFTER_TOOL, TOOL_FINAL)}),
    "qwen": Script("qwen", {**_reply(NEWLINE_BYTE, QWEN_CALL), **_reply(AFTER_TOOL, TOOL_FINAL)}),
    "unoffered": Script("unoffered", {**_reply(NEWLINE_BYTE, UNOFFERED_CALL), **_reply(AFTER_TOOL, UNOFFERED_CALL)}),
    **{f"fmt-{family}": Script(f"fmt-{family}", _reply(NEWLINE_BYTE, text)) for family, text in FAMILY_CALLS.items()},
    "leaky": Script("leaky", _reply(NEWLINE_BYTE, LEAKY_REPLY)),
    "loop": Script(
        "loop",
        {NEWLINE_BYTE: _piece(LOOP_WORD), AFTER_TOOL: _piece(LOOP_WORD), _piece(LOOP_WORD): _piece(LOOP_WORD)},
    ),
}
SCRIPT_PIECES = sorted({_piece(t) for script in SCRIPTS.values() for t in script.successors.values()})


def _word_pieces() -> list[str]:
    words = [w for w in WORDPIECES.read_text(encoding="utf-8").splitlines() if w and not w.startswith("# ")]
    pieces: set[str] = set()
    for word in words:
        pieces.update(word[:i] for i in range(2, len(word) + 1))
    return sorted(pieces, key=lambda p: (len(p), p))


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types (gguf.TokenType values) of the shared SPM vocabulary."""
    import gguf

    tokens = list(CONTROL_TOKENS)
    types = [gguf.TokenType.UNKNOWN] + [gguf.TokenType.CONTROL] * (len(CONTROL_TOKENS) - 1)
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [gguf.TokenType.BYTE] * 256
    seen = set(tokens)
    for piece in SCRIPT_PIECES + _word_pieces():
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
    # SPM merges the highest-scoring pair first: longer pieces must win.
    scores = [0.0 if t != gguf.TokenType.NORMAL else float(len(tok)) for tok, t in zip(tokens, types, strict=True)]
    return tokens, scores, [int(t) for t in types]


def build(script: Script, path: Path, n_ctx: int = 262144) -> Path:
    """Write the scripted model as GGUF (float32 everywhere: float64 crashes llama-server)."""
    import gguf

    tokens, scores, types = vocabulary()
    index = {tok: i for i, tok in enumerate(tokens)}
    states = list(script.successors)
    n_embd = max(8, 1 << (len(states)).bit_length())  # dim 0 + one per scripted token
    n_head, n_ff, n_vocab = 2, 16, len(tokens)

    embd = np.zeros((n_vocab, n_embd), dtype=np.float32)
    embd[:, 0] = 1.0
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    out[index[IM_END], 0] = 10.0
    for dim, token in enumerate(states, start=1):
        embd[index[token]] = 0.0
        embd[index[token], dim] = 1.0
        out[index[script.successors[token]], dim] = 10.0

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"ccgate-scripted-{script.name}")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(index[UNK])
    w.add_bos_token_id(index[IM_START])
    w.add_eos_token_id(index[IM_END])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(script.template)

    zeros = np.zeros
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", out)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", zeros((n_embd, n_embd), dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", zeros((n_ff, n_embd), dtype=np.float32))
    w.add_tensor("blk.0.ffn_up.weight", zeros((n_ff, n_embd), dtype=np.float32))
    w.add_tensor("blk.0.ffn_down.weight", zeros((n_embd, n_ff), dtype=np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def build_all(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    return {name: build(script, directory / f"{name}.gguf") for name, script in SCRIPTS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the scripted GGUF test models.")
    parser.add_argument("directory", type=Path)
    for name, path in build_all(parser.parse_args().directory).items():
        print(f"{name}: {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
