"""The documentation stands alone: every relative link in README.md and docs/*.md resolves in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
# Files that live outside the repository (the project's working notes): a reader of a clone has none of them.
OUTSIDE = re.compile(r"\b(DESIGN|TARGETS|STYLE)\.md\b|\.\./shared/|\bshared/data\b")


def _anchors(md: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    out = set()
    for line in md.read_text().splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return out


def _links(md: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)      # code blocks are not links
    return LINK.findall(text)


@pytest.mark.parametrize("md", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_inside_the_repository(md):
    broken = []
    for target in _links(md):
        if re.match(r"[a-z]+:", target):           # http:, https:, mailto:, file: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path).resolve() if path else md
        if not dest.is_relative_to(REPO) or not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{md.relative_to(REPO)}: links that resolve to nothing in the repository: {broken}"


@pytest.mark.parametrize("md", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_reference_to_files_outside_the_repository(md):
    hits = [f"{n}: {line.strip()}" for n, line in enumerate(md.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, f"{md.relative_to(REPO)} names files a clone does not have: {hits}"


def test_the_checker_finds_a_broken_link(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("see [a](nope.md) and [b](https://example.org) and `[c](not-a-link.md)`\n```\n[d](x.md)\n```\n")
    assert _links(md) == ["nope.md", "https://example.org", "not-a-link.md"]
