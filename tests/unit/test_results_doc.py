"""benchmarks/RESULTS.md has one section per benchmark script that records results, and the
links into it (from itself, HISTORY.md, the READMEs and docs/) land on a section.

Which scripts record results is read from the scripts themselves (they call
`write_result`), so a new benchmark without a section, or a section left behind by a
removed script, fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "RESULTS.md"
SCRIPT_NAME = re.compile(r"\b([A-Za-z0-9_]+\.py)\b")
LINK = re.compile(r"\]\(([^)\s]*)\)")


def recording_scripts() -> set[str]:
    return {path.name for path in BENCHMARKS.glob("*.py")
            if "write_result(" in (text := path.read_text(encoding="utf-8"))
            and "def write_result(" not in text}


def sections(markdown: str) -> dict[str, str]:
    """Second-level heading -> its body up to the next one (code blocks skipped for headings)."""
    found: dict[str, str] = {}
    heading, body, in_code = None, [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("## "):
            if heading is not None:
                found[heading] = "\n".join(body)
            heading, body = line[3:].strip(), []
        elif heading is not None:
            body.append(line)
    if heading is not None:
        found[heading] = "\n".join(body)
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    kept = re.sub(r"[^\w\- ]", "", heading.lower())
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    headings = [line.lstrip("#").strip() for line in _outside_code(markdown)
                if re.match(r"#{1,6} ", line)]
    return {slug(heading) for heading in headings}


def _outside_code(markdown: str) -> list[str]:
    lines, in_code = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    return lines


def test_some_scripts_record_results():
    # Guards the derivation: if the scripts stopped calling write_result the checks below
    # would pass over an empty list.
    assert {"gateway_overhead.py", "engine_throughput.py"} <= recording_scripts()


def test_every_recording_script_has_exactly_one_section():
    named = [name for heading in sections(RESULTS.read_text(encoding="utf-8"))
             for name in SCRIPT_NAME.findall(heading)]
    missing = sorted(recording_scripts() - set(named))
    repeated = sorted({name for name in named if named.count(name) > 1})
    assert not missing, f"benchmarks/RESULTS.md has no section naming {missing}"
    assert not repeated, f"benchmarks/RESULTS.md has more than one section naming {repeated}"


def test_every_section_names_an_existing_script_and_its_command():
    for heading, body in sections(RESULTS.read_text(encoding="utf-8")).items():
        names = SCRIPT_NAME.findall(heading)
        assert names, f"RESULTS.md section {heading!r} names no benchmark script"
        for name in names:
            assert (BENCHMARKS / name).is_file(), \
                f"RESULTS.md section {heading!r} names benchmarks/{name}, which does not exist"
            assert f"benchmarks/{name}" in body, \
                f"RESULTS.md section {heading!r} does not give the command that runs {name}"


LINKING = sorted({RESULTS, BENCHMARKS / "HISTORY.md", ROOT / "README.md",
                  ROOT / "README.zh-CN.md", *(ROOT / "docs").glob("*.md")})


@pytest.mark.parametrize("doc", LINKING, ids=lambda path: str(path.relative_to(ROOT)))
def test_links_into_the_results_land_on_a_section(doc):
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(text):
        path, _, anchor = target.partition("#")
        if not anchor or re.match(r"^[a-z]+:", path):
            continue
        linked = doc if not path else (doc.parent / path).resolve()
        if linked.parent != BENCHMARKS or linked.suffix != ".md":
            continue
        if anchor not in anchors(linked.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to sections that do not exist: {broken}"
