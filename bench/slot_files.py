"""Saving and restoring a llama-server slot vs processing its prompt again, on real servers.

    python bench/slot_files.py [--sizes 256,1024,4096] [--models text,gemma,gemma-swa-full] [--threads 2]

Models: the scripted `text` model the tests build, the real Gemma 3 270M, and Gemma with
`--swa-full` (a sliding-window model reuses a restored slot only with it). For each, on one
llama-server (`-np 1 --cache-ram 0 --slot-save-path`), and each size: a prompt of that many
tokens (Claude Code's real system prompt, tokenized by the server) is processed once (timed by
llama-server: `timings.prompt_ms`), the slot saved, erased, restored, and the prompt sent again
with 32 tokens more (the conversation's next turn).

Reported: the processing time, a save's and a restore's wall time as ccgate sees them (HTTP
round trip included), the file's size, the second request's reused tokens (the restore worked),
and the ratio (save + restore) / processing: below 1, a file pays. The policy's
`slot_files.min_tokens` defaults to a size where it pays on a real model, with room to spare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.harness import scripted_model  # noqa: E402
from tests.harness.procs import Process, real_model, start_llama  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "claude-code-request-turn1.json"


def tokens_of(server: Process, count: int) -> list[int]:
    body = json.loads(FIXTURE.read_text())["body"]
    text = "\n".join(b["text"] for b in body["system"]) + json.dumps(body["tools"])
    ids: list[int] = httpx.post(server.url + "/tokenize", json={"content": text}, timeout=60).json()["tokens"]
    while len(ids) < count:
        ids += ids
    return ids[:count]


def complete(server: Process, prompt: list[int]) -> dict:
    body = {"prompt": prompt, "n_predict": 1, "cache_prompt": True, "id_slot": 0, "temperature": 0}
    r = httpx.post(server.url + "/completion", json=body, timeout=900)
    r.raise_for_status()
    return r.json()["timings"]


def action(server: Process, name: str, filename: str = "bench.bin") -> float:
    started = time.perf_counter()
    r = httpx.post(f"{server.url}/slots/0?action={name}", json={"filename": filename}, timeout=300)
    r.raise_for_status()
    return (time.perf_counter() - started) * 1000


def measure(model: Path, extra: list[str], sizes: list[int], threads: int, workdir: Path) -> list[dict]:
    saved = Path(tempfile.mkdtemp(prefix="slots-", dir=workdir))
    context = max(sizes) + 256
    flags = ["-np", "1", "-c", str(context), "--cache-ram", "0", "--slot-save-path", f"{saved}/", "-t", str(threads)]
    server = start_llama(model, workdir, *flags, *extra)
    rows = []
    try:
        complete(server, tokens_of(server, 64))  # the first request pays for warming up
        for size in sizes:
            prompt = tokens_of(server, size + 32)
            action(server, "erase")
            first = complete(server, prompt[:size])
            save = action(server, "save")
            action(server, "erase")
            restore = action(server, "restore")
            again = complete(server, prompt)  # the conversation's next turn: 32 tokens more
            rows.append(
                {
                    "tokens": size,
                    "process_ms": first["prompt_ms"],
                    "save_ms": save,
                    "restore_ms": restore,
                    "file_kb": (saved / "bench.bin").stat().st_size / 1024,
                    "reused": again.get("cache_n", 0),
                }
            )
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,1024,4096")
    parser.add_argument("--models", default="text,gemma,gemma-swa-full")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="ccgate-bench-"))
    models = {
        "text": (lambda: scripted_model.build(scripted_model.SCRIPTS["text"], workdir / "text.gguf"), []),
        "gemma": (real_model, []),
        "gemma-swa-full": (real_model, ["--swa-full"]),
    }
    started = time.perf_counter()
    for name in args.models.split(","):
        print(f"\n{name}: one slot, --cache-ram 0, {args.threads} threads")
        print(
            f"{'tokens':>8}{'process ms':>12}{'save ms':>10}{'restore ms':>12}{'file KB':>10}{'reused':>8}"
            f"{'(save+restore)/process':>24}"
        )
        build, extra = models[name]
        for row in measure(build(), extra, sizes, args.threads, workdir):
            ratio = (row["save_ms"] + row["restore_ms"]) / max(row["process_ms"], 1e-9)
            print(
                f"{row['tokens']:>8}{row['process_ms']:>12.1f}{row['save_ms']:>10.1f}{row['restore_ms']:>12.1f}"
                f"{row['file_kb']:>10.0f}{row['reused']:>8}{ratio:>24.2f}"
            )
    print(f"\n(run took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
