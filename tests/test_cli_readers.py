"""The lead file readers of ``ryng-async append``: rows, lines and rejections, in-process."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ryng_async.cli import _readers
from ryng_async.cli._lead_rows import lead_maker, leads_maker, python_leads_maker
from ryng_async.cli._readers import (
    InputError,
    LineMap,
    RejectedRow,
    aiter_leads,
    guess_format,
    open_source,
)


def read_all(path: Path, **options: Any) -> tuple[list[Any], Any]:
    source = open_source(str(path), **options)
    try:
        leads = [lead for chunk in source.chunks() for lead in chunk]
    finally:
        source.close()
    return leads, source


@given(st.lists(st.integers(min_value=0, max_value=3), max_size=200))
def test_line_map_matches_a_plain_list(gaps: list[int]) -> None:
    lines: list[int] = []
    line_map = LineMap()
    line = 1
    for position, gap in enumerate(gaps):
        line += 1 + gap
        lines.append(line)
        line_map.note(position, line)
    assert [line_map.line(p) for p in range(len(gaps))] == lines
    # Only changes are stored: a regular run costs one entry.
    assert len(line_map) <= 1 + sum(1 for gap in gaps[1:] if gap)


def test_a_regular_file_costs_one_line_map_entry(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(10_000)))
    leads, source = read_all(path)
    assert len(leads) == 10_000
    assert len(source.lines) == 1
    assert source.line_of(9_999) == 10_001


# A lone \r inside a quoted field is lost by the csv module itself (it reads the text
# layer's lines, which end at a lone \r too), so cells hold \n, and lines may end \r\n.
_CELL = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00\r"),
    max_size=8,
)


def _oracle_lines(text: str) -> list[int]:
    """The line each data row starts on, by csv's own count, a row at a time."""
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    lines, end = [], reader.line_num
    for row in reader:
        if any(row):
            lines.append(end + 1)
        end = reader.line_num
    return lines


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(st.tuples(_CELL, _CELL), max_size=40),
    blanks=st.lists(st.booleans(), max_size=40),
    crlf=st.booleans(),
)
def test_csv_rows_come_back_with_the_line_they_start_on(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, str]],
    blanks: list[bool],
    crlf: bool,
) -> None:
    ending = "\r\n" if crlf else "\n"
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator=ending)
    writer.writerow(["number", "note"])
    for index, (number, note) in enumerate(rows):
        if index < len(blanks) and blanks[index]:
            buffer.write(ending)
        writer.writerow([f"+9{index:07d}{number}", note])
    text = buffer.getvalue()
    path = tmp_path_factory.mktemp("csv") / "leads.csv"
    path.write_text(text, encoding="utf-8", newline="")
    for chunk_rows in (3, 2048):  # chunks cut inside the irregular rows, and one chunk
        _readers.CSV_CHUNK_ROWS = chunk_rows
        try:
            leads, source = read_all(path)
        finally:
            _readers.CSV_CHUNK_ROWS = 2048
        assert [lead["customField1"] for lead in leads] == [note for _, note in rows]
        assert [source.line_of(p) for p in range(len(rows))] == _oracle_lines(text)


def test_csv_columns_become_wire_fields_in_order(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("city,NUMBER,agents,name\nPune,+919800000001,a|b,Max\n")
    leads, source = read_all(path, agents_column="agents")
    assert leads == [
        {
            "customField1": "Pune",
            "number": "+919800000001",
            "agentsAssigned": ["a", "b"],
            "customField2": "Max",
        }
    ]
    assert source.custom_field_names == {"customField1Name": "city", "customField2Name": "name"}
    assert source.has_agents


def test_tsv_and_semicolon_delimiters(tmp_path: Path) -> None:
    path = tmp_path / "leads.tsv"
    path.write_text("number\tname\n+919800000001\tMax, Jr.\n")
    leads, _ = read_all(path)
    assert leads == [{"number": "+919800000001", "customField1": "Max, Jr."}]
    path = tmp_path / "leads.csv"
    path.write_text("number;name\n+919800000001;Max\n")
    leads, _ = read_all(path, delimiter=";")
    assert leads == [{"number": "+919800000001", "customField1": "Max"}]


def test_gzip_files_are_read(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "leads.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"number": "+919800000001"}\n')
    leads, source = read_all(path)
    assert leads == [{"number": "+919800000001"}]
    assert source.total_bytes is None  # no share of the file can be told from bytes read


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ("phone,name\n", "no 'number' column in the header (line 1); the columns are: 'phone'"),
        ("number,Number\n", "2 columns named 'number'"),
    ],
)
def test_bad_headers(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        open_source(str(path))


def test_a_bad_byte_deep_in_the_file_is_located(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    body = "".join(f"+9198{i:08d},ok\n" for i in range(20_000))
    path.write_bytes(b"number,name\n" + body.encode() + b"+919800099999,\xff\n")
    source = open_source(str(path))
    with pytest.raises(InputError, match=r"line 20002, byte \d+ .*not valid utf-8"):
        for _ in source.chunks():
            pass
    source.close()


def test_json_lines_blank_and_bad_lines_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "leads.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"number": "+919800000001"}\r\n'
        b"\n"
        b'{"number": ["x"]}\n'
        b"{oops\n"
        b'"just a string"\n'
        b'{"number": "+919800000005"}'  # no newline at the end
    )
    leads, source = read_all(path)
    assert leads[0] == {"number": "+919800000001"}
    assert leads[1] == {"number": ["x"]}  # the SDK names the field and the rule
    assert isinstance(leads[2], RejectedRow)
    assert leads[2].reason.startswith("not valid JSON")
    assert leads[3] == "just a string"
    assert leads[4] == {"number": "+919800000005"}
    assert [source.line_of(p) for p in range(5)] == [1, 3, 4, 5, 6]
    assert source.rejected == {2: leads[2]}


def test_a_runaway_json_line_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_readers, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "leads.jsonl"
    path.write_bytes(b'{"number": "' + b"9" * 300_000 + b'"}\n')
    source = open_source(str(path))
    with pytest.raises(InputError, match="line 1 is longer than 1000 bytes"):
        list(source.chunks())
    source.close()


def test_formats_from_extensions() -> None:
    assert guess_format("a.CSV") == "csv"
    assert guess_format("a.tsv.gz") == "csv"
    assert guess_format("a.ndjson") == "jsonl"
    assert guess_format("a.json") is None


def test_unknown_encoding_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown encoding 'nope'"):
        open_source(str(tmp_path / "a.csv"), encoding="nope")
    with pytest.raises(InputError, match="cannot open"):
        open_source(str(tmp_path / "missing.csv"))
    with pytest.raises(InputError, match="cannot open"):
        open_source(str(tmp_path), fmt="csv")  # a directory


def test_default_region_rejects_with_the_libphonenumber_reason(tmp_path: Path) -> None:
    pytest.importorskip("phonenumbers")
    from ryng_async._phone import normalizer

    path = tmp_path / "leads.csv"
    path.write_text("number,x,y\n098765 43210,a,b\n12,a,b\n+919800000003,too,many,cells\n")
    leads, source = read_all(path, normalize=normalizer("in"))
    assert leads[0]["number"] == "+919876543210"
    assert isinstance(leads[1], RejectedRow)
    assert leads[1].field == "number"
    assert "libphonenumber" in leads[1].reason
    assert isinstance(leads[2], RejectedRow)
    assert set(source.rejected) == {1, 2}


@pytest.mark.anyio
async def test_aiter_leads_yields_every_lead_in_order(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("number\n" + "".join(f"+9198{i:08d}\n" for i in range(5000)))
    source = open_source(str(path))
    numbers = [lead["number"] async for lead in aiter_leads(source)]
    source.close()
    assert numbers == [f"+9198{i:08d}" for i in range(5000)]


def test_a_row_s_lead_is_its_picked_cells_under_wire_keys_the_number_stripped() -> None:
    keys, indices = ("number", "customField1", "agentsAssigned"), (2, 0, 1)
    row = ["  Pune ", "ann|bob", " +919812345678\t", "left out"]
    for lead in (
        lead_maker(keys, indices)(row),
        *leads_maker(keys, indices)([row]),  # compiled where built
        *python_leads_maker(keys, indices)([row]),
    ):
        assert lead == {
            "number": "+919812345678",
            "customField1": "  Pune ",
            "agentsAssigned": "ann|bob",
        }
        assert list(lead) == ["number", "customField1", "agentsAssigned"]
    # Its source is made from the SDK's own keys only: anything else is refused.
    with pytest.raises(AssertionError, match="not wire keys"):
        lead_maker(("number", "x': __import__('os')}#"), (0, 1))
    with pytest.raises(AssertionError, match="not wire keys"):
        leads_maker(("number", "x': __import__('os')}#"), (0, 1))


def test_json_lines_numbers_are_stripped_as_a_csv_s_on_every_decoding_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_readers, "JSONL_CHUNK_BYTES", 64)  # many blocks, each path taken
    path = tmp_path / "leads.jsonl"
    path.write_bytes(
        b'{"number": " +919800000001 ", "customField1": " Max "}\n'  # a block decoded whole
        b'{"number": "+919800000002"}\n'
        b'{"number": "\\u00a0+919800000003\\t", "agentsAssigned": [" a@x.com "]}\n'
        b"\n"  # a blank line: its block is decoded line by line
        b'{"number": "\\u3000+919800000004\\u001c"}\n'
        b'{"number": 919800000005}\n'  # no string: left for the SDK to name
        b'{"customField1": " x "}\n'  # no number: left as it is
        b"{oops\n"
        b'{"number": "+91 98000 00008 "}\n'
    )
    leads, _ = read_all(path)
    assert leads[0] == {"number": "+919800000001", "customField1": " Max "}
    assert leads[1] == {"number": "+919800000002"}
    assert leads[2] == {"number": "+919800000003", "agentsAssigned": [" a@x.com "]}
    assert leads[3] == {"number": "+919800000004"}
    assert leads[4] == {"number": 919800000005}
    assert leads[5] == {"customField1": " x "}
    assert isinstance(leads[6], RejectedRow)
    assert leads[7] == {"number": "+91 98000 00008"}


def test_json_lines_numbers_are_stripped_before_the_default_region_reads_them(
    tmp_path: Path,
) -> None:
    pytest.importorskip("phonenumbers")
    from ryng_async._phone import normalizer

    path = tmp_path / "leads.jsonl"
    path.write_text('{"number": " 098765 43210\\t"}\n{"number": "\\u3000+919800000002 "}\n')
    leads, _ = read_all(path, normalize=normalizer("IN"))
    assert leads == [{"number": "+919876543210"}, {"number": "+919800000002"}]


_PAD = st.text(alphabet=" \t\n\xa0\x1c\x1f\x85\u2003\u3000\u200b\ufeff", max_size=3)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(_PAD, st.integers(10**9, 10**12), _PAD), min_size=1, max_size=30))
def test_a_json_lines_file_and_a_csv_of_one_content_give_the_same_numbers(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int, str]]
) -> None:
    folder = tmp_path_factory.mktemp("same")
    numbers = [f"{before}+{digits}{after}" for before, digits, after in rows]
    with (folder / "leads.csv").open("w", newline="") as out:
        csv.writer(out).writerows([["number", "Name"], *[[n, "x"] for n in numbers]])
    lines = "".join(json.dumps({"number": n, "customField1": "x"}) + "\n" for n in numbers)
    (folder / "leads.jsonl").write_text(lines)
    from_csv, _ = read_all(folder / "leads.csv")
    from_json_lines, _ = read_all(folder / "leads.jsonl")
    assert from_json_lines == from_csv
    assert [lead["number"] for lead in from_csv] == [n.strip() for n in numbers]


# Cells as a CSV reader gives them; the number's often padded with any kind of space.
CELLS = st.text(max_size=6)
SPACES = st.text(alphabet=" \t\n\r\x0b\x0c\x1c\x85\xa0\u2003\u3000", max_size=2)


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(
    st.permutations(["number", "customField1", "customField2", "agentsAssigned"]).flatmap(
        lambda keys: st.tuples(
            st.just(tuple(keys[: len(keys) - 1])),
            st.lists(st.tuples(SPACES, CELLS, SPACES).map("".join), min_size=5, max_size=5).flatmap(
                lambda first: st.lists(
                    st.just(first) | st.lists(CELLS, min_size=5, max_size=5), max_size=4
                )
            ),
            st.permutations(range(5)).map(lambda at: tuple(at[:3])),
        )
    )
)
def test_the_compiled_row_maker_makes_what_the_display_makes(
    case: tuple[tuple[str, ...], list[list[str]], tuple[int, ...]],
) -> None:
    keys, rows, indices = case
    expected = python_leads_maker(keys, indices)(rows)
    made = leads_maker(keys, indices)(rows)
    assert made == expected
    assert [list(lead) for lead in made] == [list(lead) for lead in expected]


def test_the_row_maker_refuses_a_row_too_short_as_the_display_does() -> None:
    keys, indices = ("number", "customField1"), (0, 3)
    for make in (leads_maker(keys, indices), python_leads_maker(keys, indices)):
        with pytest.raises(IndexError):
            make([["+919812345678", "a", "b", "c"], ["+919812345678"]])
