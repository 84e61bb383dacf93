"""Upstream text made safe to show: bounded, one line, and without anything like a credential.

An upstream's error message reaches the client's error body, `x-ccgate-fallback-reason` and the
logs. A hostile or careless upstream may echo the request's headers in it, our `x-api-key`
included, or send megabytes and control characters: it is cut, flattened and redacted first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_TEXT = 500
REDACTED = "[redacted]"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# Things that look like credentials whoever they belong to: API keys by their well-known
# prefixes, bearer tokens, and the value after a header or field named like a key or a token.
_CREDENTIALS = re.compile(
    r"(?:sk-ant-|sk-proj-|sk-|ccg-|xox[abp]-|ghp_|github_pat_|AKIA)[A-Za-z0-9_\-]{8,}"
    r"|(?i:(?<=bearer )|(?<=basic ))[A-Za-z0-9._~+/=\-]{8,}"
    r"|(?i:(?<=api[-_]key)|(?<=x-api-key)|(?<=authorization)|(?<=token)|(?<=secret)|(?<=password))"
    r"""["']?\s*[:=]\s*["']?(?!\[redacted)[^\s"',;}]{4,}"""
)


def safe_text(text: str, secrets: Iterable[str | None] = (), limit: int = MAX_TEXT) -> str:
    """`text` with each of `secrets` and anything credential-shaped replaced, control characters
    folded to spaces, and at most `limit` characters."""
    if len(text) > 4 * limit:  # nothing past this point is shown: no need to scan it
        text = text[: 4 * limit]
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    text = _CREDENTIALS.sub(_redact, text)
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redact(match: re.Match[str]) -> str:
    found = match.group(0)
    separator = re.match(r"""["']?\s*[:=]\s*["']?""", found)
    if separator and separator.group(0):  # `x-api-key: value`: keep the name and separator
        return separator.group(0) + REDACTED
    return REDACTED
