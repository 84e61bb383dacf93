"""Every YAML example in the README is a policy that `ccgate check-policy` accepts as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from router.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"
SNIPPETS = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_policy_examples() -> None:
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_policy_example_passes_check_policy(
    snippet: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(snippet)
    assert main(["check-policy", str(path)]) == 0, capsys.readouterr().err
