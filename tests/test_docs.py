"""The user's documents: a short README that is the front door, the manuals in docs/, and what every project
carries (licence, changelog, contributing guide). Their commands must exist in the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["api.md", "benchmarks.md", "design.md", "operations.md", "training.md"]
# words of a lab notebook, not of a product manual
NARRATION = re.compile(r"\b(this session|earlier sessions?|in an earlier|issue:|we (added|fixed|changed))\b", re.I)


def test_the_readme_is_a_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for heading in ("## Install", "## Two commands", "## Quickstart", "## Command line", "## Settings",
                    "## Choosing an index", "## Figures", "## Limitations"):
        assert heading in text, heading
    assert "<!--" not in text  # no placeholder left
    for doc in DOCS:
        assert f"docs/{doc}" in text, doc


@pytest.mark.parametrize("name", ["README.md", "CONTRIBUTING.md", "CHANGELOG.md", "LICENSE", *[f"docs/{d}" for d in DOCS]])
def test_each_document_exists_and_speaks_of_the_product(name):
    text = (ROOT / name).read_text()
    assert text.strip()
    assert not NARRATION.search(text), NARRATION.search(text).group(0)


def test_the_licence_is_the_one_the_package_declares():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text()


def test_every_command_the_readme_shows_exists(capsys):
    from simsearch.cli import main

    text = (ROOT / "README.md").read_text()
    shown = set(re.findall(r"^simsearch (\w+)(?: +(\w+))?", text, re.M))
    assert len(shown) >= 10
    for command, sub in shown:
        args = [command, sub, "--help"] if command == "index" and sub else [command, "--help"]
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 0, (args, capsys.readouterr().err[-500:])
        assert "usage: simsearch" in capsys.readouterr().out
