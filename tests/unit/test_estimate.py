from __future__ import annotations

import base64
import json
from pathlib import Path

from router.protocol.estimate import TOKENS_PER_IMAGE, estimate_input_tokens

CAPTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "claude-code-request-turn1.json").read_text())[
    "body"
]


def test_claude_code_request_is_near_a_real_count() -> None:
    assert 17_000 < estimate_input_tokens(CAPTURE) < 24_000  # llama-server counts 20,142 with the test vocabulary


def test_a_screenshot_counts_as_an_image_not_as_its_base64() -> None:
    shot = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(b"\0" * 3_000_000).decode()}
    plain = {"messages": [{"role": "user", "content": "look"}]}
    with_image = {
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": shot}, {"type": "text", "text": "look"}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": shot}]}
                ],
            },
        ]
    }
    added = estimate_input_tokens(with_image) - estimate_input_tokens(plain)
    assert 2 * TOKENS_PER_IMAGE <= added < 2 * TOKENS_PER_IMAGE + 100
