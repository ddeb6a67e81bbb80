"""Every English page has a Chinese twin kept in step: docs/X.md and docs/X.zh-CN.md (and
README.md and README.zh-CN.md) exist in pairs and have the same sections, heading for
heading (the same levels in the same order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADING = re.compile(r"^(#{1,6})\s+\S")
FENCE = re.compile(r"^\s*(```|~~~)")


def english_pages() -> list[Path]:
    return [ROOT / "README.md"] + sorted(
        page for page in (ROOT / "docs").glob("*.md") if not page.name.endswith(".zh-CN.md"))


def twin(page: Path) -> Path:
    return page.with_name(page.stem + ".zh-CN.md")


def heading_levels(page: Path) -> list[int]:
    """The level of each heading, outside fenced code (where `#` starts a comment)."""
    levels, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (found := HEADING.match(line)):
            levels.append(len(found.group(1)))
    return levels


def test_every_chinese_page_has_its_english_page():
    orphans = [page.name for page in (ROOT / "docs").glob("*.zh-CN.md")
               if not page.with_name(page.name.replace(".zh-CN", "")).exists()]
    assert not orphans


@pytest.mark.parametrize("page", english_pages(), ids=lambda page: page.name)
def test_each_page_has_a_chinese_twin_with_the_same_sections(page):
    chinese = twin(page)
    assert chinese.exists(), f"{page.relative_to(ROOT)} has no {chinese.name}"
    english, translated = heading_levels(page), heading_levels(chinese)
    assert len(english) == len(translated), (
        f"{page.name} has {len(english)} headings, {chinese.name} {len(translated)}")
    assert english == translated, f"{page.name} and {chinese.name} differ in heading levels"


def test_headings_inside_code_are_not_sections(tmp_path):
    page = tmp_path / "x.md"
    page.write_text("# Title\n\n```bash\n# a comment\n```\n\n## Part\n#not a heading\n")
    assert heading_levels(page) == [1, 2]
