"""The READMEs and migration guides link to files that exist, and to each other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "README.zh-CN.md", "docs/migrate.md", "docs/migrate.zh-CN.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(doc: str) -> list[str]:
    text = (ROOT / doc).read_text(encoding="utf-8")
    return [target for target in LINK.findall(text)
            if not re.match(r"^[a-z]+:", target) and not target.startswith("#")]


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_points_at_a_file(doc):
    missing = [target for target in relative_links(doc)
               if not ((ROOT / doc).parent / target.split("#")[0]).exists()]
    assert not missing, f"{doc} links to missing files: {missing}"


@pytest.mark.parametrize("doc, others", [
    ("README.md", {"README.zh-CN.md", "docs/migrate.md", "docs/migrate.zh-CN.md"}),
    ("README.zh-CN.md", {"README.md", "docs/migrate.zh-CN.md"}),
    ("docs/migrate.md", {"docs/migrate.zh-CN.md"}),
    ("docs/migrate.zh-CN.md", {"docs/migrate.md"}),
])
def test_each_language_links_the_other(doc, others):
    base = (ROOT / doc).parent
    linked = {str(((base / t).resolve()).relative_to(ROOT)) for t in relative_links(doc)}
    assert others <= linked


def test_readme_still_starts_with_the_two_set_up_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[2] == "```bash"
    assert lines[3].startswith("scripts/serve ") and lines[4].startswith("scripts/test ")
