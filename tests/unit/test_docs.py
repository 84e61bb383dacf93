"""What the docs (docs/, README.md, deploy/) show a reader to type is checked here, as written:

- every ```yaml block parses, and one that is a policy (top-level `backends:` or `rules:`) is a
  whole one that `ccgate check-policy` accepts;
- every ```sh block is valid shell; each `ccgate ...` in it is a command line the CLI accepts
  (parsed, not run), each `python <script>` names a script of the repository, and each CCGATE_*
  variable set in it is one ccgate reads;
- no link leaves the repository (a relative link resolves to a file in it).
(`mkdocs build --strict`, run by the test command, checks the links between pages and anchors.)
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from router.cli import main, parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "deploy").rglob("README.md")])
FENCE = re.compile(r"^```(\w[\w-]*)[^\n]*\n(.*?)^```", re.S | re.M)
KNOWN_VARIABLES = set(re.findall(r"CCGATE_[A-Z_]+", (ROOT / "router" / "config.py").read_text()))


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for i, match in enumerate(FENCE.finditer(page.read_text())):
            if match.group(1) == language:
                found.append((f"{page.relative_to(ROOT)}#{i}", match.group(2)))
    return found


YAML = blocks("yaml")
SHELL = blocks("sh") + blocks("bash")


def test_there_is_something_to_check() -> None:
    assert (ROOT / "mkdocs.yml").is_file() and len(PAGES) >= 10
    assert len([1 for _, text in YAML if _is_policy(text)]) >= 5 and len(SHELL) >= 10


def test_the_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def _is_policy(text: str) -> bool:
    loaded = yaml.safe_load(text)
    return isinstance(loaded, dict) and ("backends" in loaded or "rules" in loaded)


@pytest.mark.parametrize(("where", "text"), YAML, ids=[w for w, _ in YAML])
def test_yaml_blocks(where: str, text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    yaml.safe_load(text)  # valid YAML, whatever it is
    if _is_policy(text):
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        assert main(["check-policy", str(path)]) == 0, capsys.readouterr().err


def _commands(text: str) -> list[tuple[list[str], list[str]]]:
    """The simple commands of a block (the variables set for each, its words): lines joined at
    `\\`, split at pipes and `&&`/`;`."""
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\|\||&&|;|\|", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue  # a quote that spans parts: bash -n judges the block
            assigned = []
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value command
                assigned.append(words.pop(0).split("=")[0])
            if words:
                found.append((assigned, words))
    return found


@pytest.mark.parametrize(("where", "text"), SHELL, ids=[w for w, _ in SHELL])
def test_shell_blocks(where: str, text: str) -> None:
    syntax = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    for assigned, words in _commands(text):
        if words[0] in ("ccgate", "export"):
            for variable in [v for v in assigned + [w.split("=")[0] for w in words[1:]] if v.startswith("CCGATE_")]:
                assert variable in KNOWN_VARIABLES, f"{where}: ccgate does not read {variable}"
        if words[0] == "ccgate" and not {"--help", "-h", "--version"} & set(words):
            try:
                parser().parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"{where}: ccgate does not accept {' '.join(words)}")
        if words[0] in ("python", "python3") and len(words) > 1 and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), f"{where}: no script {words[1]}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_links_stay_in_the_repository(page: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address, or an anchor on the page
        resolved = (page.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} leaves the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
