"""The documentation's links: every local link resolves, and nothing points outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", ".venv", ".meter", "node_modules", ".mypy_cache", ".ruff_cache"}
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def markdown_files() -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts[:-1])
    )


def user_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without code: a link-like string inside code is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def local_links(path: Path) -> list[str]:
    targets = LINK.findall(prose(path.read_text(encoding="utf-8")))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text.replace("`", "")).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def test_slug_follows_github() -> None:
    assert slug("Ingest: `POST /v1/events`") == "ingest-post-v1events"
    assert slug("Exactly once: what is guaranteed") == "exactly-once-what-is-guaranteed"


def test_the_user_docs_exist() -> None:
    assert {p.name for p in user_docs()} >= {
        "README.md",
        "configuration.md",
        "performance.md",
        "api.md",
        "billing.md",
        "operations.md",
    }


@pytest.mark.parametrize("doc", user_docs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_resolves(doc: Path) -> None:
    broken = []
    for target in local_links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{doc.relative_to(ROOT)}: {broken}"


def test_no_markdown_file_links_outside_the_repo() -> None:
    outside = [
        f"{doc.relative_to(ROOT)}: {target}"
        for doc in markdown_files()
        for target in local_links(doc)
        if not (doc.parent / target.partition("#")[0]).resolve().is_relative_to(ROOT)
    ]
    named = [
        str(doc.relative_to(ROOT))
        for doc in markdown_files()
        if "../shared" in doc.read_text(encoding="utf-8")
    ]
    assert not outside, outside
    assert not named, named
