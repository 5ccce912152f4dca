"""The README's Performance section quotes only figures of the committed benchmark run.

Every measured figure in that section (a number with a decimal point, a ratio such as
``3x``, or a number with a unit: MB, ms, s, minutes, bytes, %, /s) must appear in
``benchmarks/RESULTS.md``, and every row of a table there must match one line of it, so
the README and the results cannot drift apart. After ``python -m benchmarks`` regenerates
RESULTS.md, this test names each README figure the new run no longer has: quote the new
run's instead.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_UNIT = r"MB|ms|s|minutes|bytes|%|/s|callbacks/s|leads/s|req/s|us"
_FIGURE = re.compile(
    rf"(?<![\w.,/])(?P<number>{_NUMBER})(?:(?P<x>x)|\s?(?P<unit>{_UNIT}))?(?![\w])"
)
_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"\]\([^)]*\)")


def performance_section(readme: str) -> str:
    """The README's ``## Performance`` section, up to the next second-level heading."""
    start = readme.index("\n## Performance\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else len(readme)]


def figures(text: str) -> list[str]:
    """The measured figures quoted in ``text`` (code spans and link targets left out).

    A ratio keeps its ``x`` (``0.88x``); another figure is its number (``48.2`` of
    ``48.2 MB``). A plain integer with no unit (a size, a concurrency) is not a figure.
    """
    text = _LINK.sub("]", _CODE.sub("", text))
    found = []
    for match in _FIGURE.finditer(text):
        number = match["number"]
        if match["x"]:
            found.append(number + "x")
        elif match["unit"] or "." in number:
            found.append(number)
    return found


def appears(figure: str, results: str) -> bool:
    """Whether ``figure`` is a whole token of ``results`` (``0.8x`` is not in ``0.88x``)."""
    if figure.endswith("x"):
        pattern = rf"(?<![\d.,]){re.escape(figure)}(?![\w])"
    else:
        pattern = rf"(?<![\d.,]){re.escape(figure)}(?![\d]|\.\d|,\d)"
    return re.search(pattern, results) is not None


def table_rows(section: str) -> list[list[str]]:
    """The figures of each row of the section's tables (header and rule rows left out)."""
    rows = []
    for line in map(str.strip, section.splitlines()):
        if not line.startswith("|") or set(line) <= set("|:- "):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        numbers = [
            cell for cell in cells if re.fullmatch(rf"(?:{_NUMBER})x?(?:\s?(?:{_UNIT}))?", cell)
        ]
        if len(numbers) >= 2:
            rows.append([re.sub(rf"\s?(?:{_UNIT})$", "", cell) for cell in numbers])
    return rows


def test_the_extractor_finds_the_figures_and_skips_sizes() -> None:
    text = "batches of 1,000, concurrency 16: **0.88x** (2.41x CPU), 48.2 MB, p99 36.1 ms, `0.5x`"
    assert figures(text) == ["0.88x", "2.41x", "48.2", "36.1"]
    assert figures("2,000 callbacks/s; about 20 minutes; 3x; 162 bytes") == [
        "2,000",
        "20",
        "3x",
        "162",
    ]
    assert appears("0.88x", "| 0.88x |")
    assert not appears("0.8x", "| 0.88x |")
    assert not appears("48.2", "148.2 MB")
    assert not appears("1.0", "1.01x")


def test_every_figure_the_performance_section_quotes_is_in_the_committed_results() -> None:
    section = performance_section(README.read_text())
    results = RESULTS.read_text()
    quoted = figures(section)
    assert len(quoted) >= 20  # the section quotes the run; an empty list proves nothing
    missing = [figure for figure in quoted if not appears(figure, results)]
    assert not missing, f"README Performance figures not in benchmarks/RESULTS.md: {missing}"


def test_every_table_row_of_the_performance_section_is_one_line_of_the_results() -> None:
    section = performance_section(README.read_text())
    lines = RESULTS.read_text().splitlines()
    rows = table_rows(section)
    assert rows
    unmatched = [
        row for row in rows if not any(all(appears(cell, line) for cell in row) for line in lines)
    ]
    assert not unmatched, f"README table rows with no matching line in RESULTS.md: {unmatched}"
