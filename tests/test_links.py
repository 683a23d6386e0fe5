"""Every relative link in the README and the docs leads somewhere: the file exists and,
where the link names a heading (`page.md#heading`), the page has that heading, by
GitHub's rule for a heading's anchor (lower case, punctuation dropped, spaces to
hyphens, `-1`, `-2`... for repeats). A heading renamed without its links is caught here.

    pytest -q tests/test_links.py
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [p for p in [ROOT / "README.md", ROOT / "EXPERIMENTS.md", ROOT / "BENCHMARKS.md",
                     *sorted((ROOT / "docs").glob("*.md"))] if p.exists()]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


def prose(page: Path) -> list[tuple[int, str]]:
    """(line number, line) of the page outside fenced code blocks."""
    out, in_block = [], False
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_block = not in_block
        elif not in_block:
            out.append((number, line))
    return out


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings."""
    seen: dict[str, int] = {}
    for _, line in prose(page):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"`|\*\*|\*|_(?=\W)|\[([^\]]*)\]\([^)]*\)", lambda g: g.group(1) or "", m.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def test_anchor_rule_matches_githubs():
    page = ROOT / "EXPERIMENTS.md"
    assert "the-staleness-experiment" in anchors(page)
    assert "over-learning-rates-with-decoupled-ppo-at-4-mini-batches-gspo-and-m2po-seed-0-of-three-2026-12-07" \
        in anchors(page)


LINKS = [(page, number, target) for page in PAGES for number, line in prose(page)
         for target in LINK.findall(line) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page,number,target", LINKS, ids=[f"{p.name}:{n}" for p, n, _ in LINKS])
def test_every_relative_link_resolves(page, number, target):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{page.relative_to(ROOT)}:{number}: {target} names no file"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), f"{page.relative_to(ROOT)}:{number}: {dest.name} has no heading #{anchor}"
