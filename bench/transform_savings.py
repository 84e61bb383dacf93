"""How many prompt tokens the `transform:` steps save on Claude Code's first request.

    python bench/transform_savings.py [--llama URL]

Counts come from a real llama-server's /v1/messages/count_tokens: by default one started here
on the scripted `text` model from the test harness (its vocabulary holds a real Claude Code
prompt's words, so counts are near a real tokenizer's); `--llama` uses your own server and model.
The baseline is the untouched request, counted in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.policy.transforms import Transform, apply  # noqa: E402

STEPS = {
    "untouched": Transform(),
    "tool_descriptions: 1000": Transform(tool_descriptions=1000),
    "tool_descriptions: 300": Transform(tool_descriptions=300),
    "tool_descriptions: 100": Transform(tool_descriptions=100),
    "system: 2000": Transform(system=2000),
    "tool_descriptions: 300 + system: 2000": Transform(tool_descriptions=300, system=2000),
}


def count(url: str, body: dict) -> int:
    keep = {k: v for k, v in body.items() if k in ("model", "system", "tools", "messages")}
    r = httpx.post(url + "/v1/messages/count_tokens", json=keep, timeout=120)
    r.raise_for_status()
    return r.json()["input_tokens"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama", help="URL of a running llama-server (default: start the scripted one)")
    args = parser.parse_args()
    body = json.loads((ROOT / "tests" / "fixtures" / "claude-code-request-turn1.json").read_text())["body"]
    server = None
    url = args.llama
    if url is None:
        from tests.harness import scripted_model
        from tests.harness.procs import start_llama

        tmp = Path(tempfile.mkdtemp())
        model = scripted_model.build(scripted_model.SCRIPTS["text"], tmp / "text.gguf")
        server = start_llama(model, tmp, "-np", "1")
        url = server.url
    try:
        base = count(url, body)
        print(f"Claude Code 2.1.197 first request, counted by {'your' if args.llama else 'the scripted'} llama-server")
        print(f"{'transform':<40}{'tokens':>8}{'saved':>8}{'ratio':>8}")
        for name, step in STEPS.items():
            n = count(url, apply(step, body))
            print(f"{name:<40}{n:>8}{base - n:>8}{n / base:>8.2f}")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
