"""The README is a first page: short, and every page it hands reference material to exists."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(path.read_text(encoding="utf-8")) if "://" not in t]


def test_readme_fits_about_two_screens():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 130


def test_readme_links_the_reference_pages():
    links = set(relative_links(ROOT / "README.md"))
    for page in ("docs/plugin.md", "docs/cli.md", "docs/api.md", "docs/how_it_works.md", "docs/models.md",
                 "docs/export.md", "docs/scaling.md", "docs/architecture.md", "docs/results.md",
                 "docs/contributing.md", "LICENSE"):
        assert page in links, page


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = [f"{page.relative_to(ROOT)} -> {target}" for page in pages for target in relative_links(page)
              if not (page.parent / target).exists()]
    assert broken == []
