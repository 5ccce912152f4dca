"""MkDocs hook: the Benchmarks page shows benchmarks/RESULTS.md and its plot as committed.

The page holds the marker ``<!-- RESULTS.md -->``; at build time it becomes the file's
text with each heading one level down (its title becomes a section), and the plot it
links, ``benchmarks/throughput.png``, is added to the site beside the page. Nothing is
copied into ``docs/``: a regenerated RESULTS.md shows on the next build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MARKER = "<!-- RESULTS.md -->"
PAGE = "benchmarks.md"
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")
# A link from RESULTS.md to another file beside it (HISTORY.md): named, not linked, since
# only RESULTS.md and its plots are part of the site.
_FILE_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(([^):\s]+\.md)\)")


def _images() -> list[str]:
    return _IMAGE.findall(RESULTS.read_text(encoding="utf-8"))


def on_files(files: Files, config: Any, **kwargs: Any) -> Files:
    """Add the plots RESULTS.md shows, from benchmarks/, to the site."""
    for name in _images():
        files.append(File.generated(config, name, abs_src_path=str(RESULTS.parent / name)))
    return files


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Put RESULTS.md, its headings a level down, where the marker is."""
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"{PAGE} lost its {MARKER} marker")
    results = RESULTS.read_text(encoding="utf-8")
    fence = False
    lines = []
    for line in results.splitlines():
        if line.startswith("```"):
            fence = not fence
        lines.append("#" + line if not fence and line.startswith("#") else line)
    text = _FILE_LINK.sub(r"\1 (`benchmarks/\2` in the repository)", "\n".join(lines))
    return markdown.replace(MARKER, text)
