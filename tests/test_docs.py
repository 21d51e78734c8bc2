"""The README stays a short start, the reference lives in docs/ (built by MkDocs from mkdocs.yml's nav), and no
link leaves the repository except for a public website. Fast checks only: `./run test` runs the strict MkDocs
build, which also checks every link between the pages and every anchor."""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MKDOCS_YML = ROOT / "mkdocs.yml"
README_MAX_LINES = 250

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>")
HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']*)["']""", re.I)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def without_code(text: str) -> str:
    """The text with fenced blocks removed and code spans blanked, so what they quote is not taken for links."""
    return CODE_SPAN.sub("`code`", FENCE.sub("", text))


def links(text: str) -> list[str]:
    prose = without_code(text)
    found = [*INLINE_LINK.findall(prose), *REFERENCE_DEFINITION.findall(prose)]
    return [*found, *AUTOLINK.findall(prose), *HTML_LINK.findall(prose)]


def relative_target(page: Path, link: str) -> tuple[Path, str] | None:
    """The file a relative link names and its anchor; None for a link on the same page or with a scheme."""
    if SCHEME.match(link) or link.startswith("#"):
        return None
    path, _, anchor = link.partition("#")
    return (page.parent / path).resolve(), anchor


def anchors(page: Path) -> set[str]:
    """The ids MkDocs (Python-Markdown's toc) gives the page's headings."""
    ids: set[str] = set()
    for title in HEADING.findall(FENCE.sub("", page.read_text())):
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", title)
        slug = base = slugify(text, "-")
        n = 0
        while slug in ids:
            n += 1
            slug = f"{base}_{n}"
        ids.add(slug)
    return ids


def nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [] if SCHEME.match(nav) else [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference text into docs/"


def test_the_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```[^\n]*\n(.*?)```", README.read_text(), re.S)
    assert first_block
    assert [line.split()[:2] for line in first_block.group(1).splitlines()] == [["./run", "serve"], ["./run", "test"]]


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    config = yaml.safe_load(MKDOCS_YML.read_text())
    assert config["docs_dir"] == "docs"
    in_nav = nav_pages(config["nav"])
    assert len(in_nav) == len(set(in_nav)), f"a page is listed twice in mkdocs.yml's nav: {in_nav}"
    on_disk = {page.relative_to(DOCS).as_posix() for page in DOCS.rglob("*.md")}
    assert sorted(in_nav) == sorted(on_disk)


@pytest.mark.parametrize("page", markdown_files(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_link_leaves_the_repository_but_for_a_public_website(page: Path) -> None:
    text = page.read_text()
    for link in links(text):
        if SCHEME.match(link):
            assert link.startswith("https://"), f"{link!r}: only https:// links to public websites may leave the repo"
            continue
        target = relative_target(page, link)
        if target is not None:
            assert target[0].is_relative_to(ROOT), f"{link!r} points outside the repository"
    # Paths quoted as code are written from the repository's root: none may climb out of it either.
    for _, quoted in CODE_SPAN.findall(FENCE.sub("", text)):
        if quoted.strip().startswith("../"):
            assert (ROOT / quoted.strip()).resolve().is_relative_to(ROOT), f"`{quoted}` is outside the repository"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    for link in links(page.read_text()):
        target = relative_target(page, link)
        if target is None:
            continue
        path, anchor = target
        assert path.exists(), f"{link!r} in {page.name}: {path} does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{link!r} in {page.name}: no heading gives the anchor #{anchor}"


def test_the_link_finder_sees_what_it_must() -> None:
    text = (
        "[a](docs/api.md) ![b](img.png 'title') [`c`](../shared/x.md#top) <https://example.com>\n"
        '[ref]: ../outside.md\n<a href="http://example.com">x</a> `[not](a-link.md)`\n'
        "```sh\n[nor](this.md)\n```\n"
    )
    found = links(text)
    inline = ["docs/api.md", "img.png", "../shared/x.md#top"]
    assert found == [*inline, "../outside.md", "https://example.com", "http://example.com"]
