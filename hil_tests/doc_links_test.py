"""The documents link only inside the repository, and every such link resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SKIP = {".git", "build", "node_modules", "qhil-out"}
DOCS = sorted(p for p in REPO.rglob("*.md") if not _SKIP & set(p.relative_to(REPO).parts[:-1]))
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_there_is_a_docs_index_and_design_notes() -> None:
    index = (REPO / "docs" / "index.md").read_text()
    assert "design.md" in index
    assert (REPO / "docs" / "design.md").is_file()


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_links_stay_in_the_repository_and_resolve(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text, f"{doc}: names a folder outside the repository"
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or an anchor in the same page
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"{doc}: {target} leaves the repository"
        assert path.exists(), f"{doc}: {target} does not exist"
