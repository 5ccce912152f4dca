"""The one column mapping: a CSV header and a DataFrame's columns become the same leads.

The number column, the agents column and the custom fields (all, chosen or left out) are
found by ``ryng_async._columns``, which the CLI's CSV reader and ``leads_from_frame``
share; the tests here feed the same header to both.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from ryng_async import ValidationError
from ryng_async._columns import NUMBER_SPACES, map_columns, split_agents
from ryng_async.cli._readers import InputError, open_source
from ryng_async.dataframes import leads_from_frame

LIBRARIES = ["polars", "pandas", "arrow", "arrow-batches"]


def make_frame(library: str, columns: dict[str, list[Any]]) -> Any:
    """The same table in each library (string columns; None is null)."""
    pa = pytest.importorskip("pyarrow")
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    if library == "polars":
        return pytest.importorskip("polars").from_arrow(table)
    if library == "pandas":
        pd = pytest.importorskip("pandas")
        return pd.DataFrame(
            {name: pd.Series(values, dtype="string") for name, values in columns.items()}
        )
    if library == "arrow":
        return table
    return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=3))


def frame_of(library: str, header: list[str], rows: list[list[str]]) -> Any:
    """A frame of string columns with exactly ``header`` (an empty or repeated name too,
    where the library has it: pandas and Arrow; polars has not, so the test is skipped)."""
    pa = pytest.importorskip("pyarrow")
    columns = [pa.array(list(values), pa.string()) for values in zip(*rows, strict=True)]
    table = pa.Table.from_arrays(columns, names=header)
    if library == "arrow":
        return table
    if library == "polars":
        pl = pytest.importorskip("polars")
        if len(set(header)) < len(header) or "" in header:
            pytest.skip("polars has no column named '' (it names it) nor two of one name")
        return pl.from_arrow(table)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({i: pd.Series(list(c), dtype="string") for i, c in enumerate(columns)})
    frame.columns = header
    return frame


def read_csv(path: Path, **options: Any) -> tuple[list[Any], dict[str, str] | None]:
    source = open_source(str(path), **options)
    try:
        return [lead for chunk in source.chunks() for lead in chunk], source.custom_field_names
    finally:
        source.close()


_ROWS = [
    ["Max", "+919876543210", "a@x.com; b@x.com", "Pune", ""],
    ["", "+917994771185", "", "Delhi", "vip"],
    ["Sophia", "12", "c@x.com|d@x.com", "", "x"],
]
_HEADERS = {
    "odd case": ["Name", "NuMbEr", "agentsAssigned", "City", "Notes"],
    "empty name": ["Name", "number", "agentsassigned", "", "Notes"],
    "names differing in case": ["Name", "number", "AgentsAssigned", "name", "NAME"],
    "one name twice": ["Name", "number", "agentsAssigned", "City", "City"],
}


@pytest.mark.parametrize("library", ["polars", "pandas", "arrow"])
@pytest.mark.parametrize(
    ("header", "choose", "names"),
    [
        pytest.param(
            _HEADERS["odd case"],
            {},
            {"customField1Name": "Name", "customField2Name": "City", "customField3Name": "Notes"},
            id="odd-case-number",
        ),
        pytest.param(
            _HEADERS["empty name"],
            {},
            {
                "customField1Name": "Name",
                "customField2Name": "column 4",
                "customField3Name": "Notes",
            },
            id="empty-header-name",
        ),
        pytest.param(
            _HEADERS["names differing in case"],
            {"exclude_columns": ["NAME"]},  # case-insensitive: all three go
            None,
            id="exclude-names-differing-in-case",
        ),
        pytest.param(
            _HEADERS["one name twice"],
            {},
            {"customField1Name": "Name", "customField2Name": "City", "customField3Name": "City"},
            id="one-name-twice",
        ),
        pytest.param(
            _HEADERS["odd case"],
            {"columns": ["notes", "number"]},
            {"customField1Name": "Notes"},
            id="columns",
        ),
        pytest.param(
            _HEADERS["odd case"],
            {"exclude_columns": ["name"]},
            {"customField1Name": "City", "customField2Name": "Notes"},
            id="exclude-columns",
        ),
    ],
)
def test_a_csv_and_each_frame_library_map_one_header_alike(
    tmp_path: Path,
    library: str,
    header: list[str],
    choose: dict[str, list[str]],
    names: dict[str, str] | None,
) -> None:
    path = tmp_path / "leads.csv"
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([header, *_ROWS])
    from_csv, csv_names = read_csv(path, **choose)
    leads, frame_names = leads_from_frame(frame_of(library, header, _ROWS), **choose)
    assert list(leads) == from_csv
    assert frame_names == csv_names == names
    # The agents cell was split, and an empty one left out, by both.
    assert from_csv[0]["agentsAssigned"] == ["a@x.com", "b@x.com"]
    assert "agentsAssigned" not in from_csv[1]
    assert [lead["number"] for lead in from_csv] == [row[1] for row in _ROWS]


# Whitespace of every kind str.strip() drops around a number: a spreadsheet's spaces, a tab,
# a no-break space, an ideographic space, and \x1c-\x1f (which polars' own strip keeps).
_PADDED_ROWS = [
    ["Max", " +919876543210 ", "a@x.com; b@x.com", " Pune "],
    ["", "\t+917994771185\xa0", "", "Delhi"],
    ["Sophia", "\u3000+919876543211\x1c", "c@x.com", ""],
    ["Alex", "\x1f+919876543212\u2028\r\n", "", "Goa"],
    ["Sam", "+91 98765 43213 ", "", "x"],  # only the ends: the inner spaces stay
    ["Ren", "12 ", "", "y"],  # trimmed, and still invalid
]
_TRIMMED = [
    "+919876543210",
    "+917994771185",
    "+919876543211",
    "+919876543212",
    "+91 98765 43213",
    "12",
]


def test_number_spaces_are_what_str_strip_drops() -> None:
    spaces = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    assert spaces == NUMBER_SPACES
    assert (NUMBER_SPACES + "x" + NUMBER_SPACES).strip() == "x"


def test_padded_numbers_give_the_same_leads_from_csv_json_lines_and_every_frame(
    tmp_path: Path,
) -> None:
    header = ["Name", "number", "agentsAssigned", "City"]
    path = tmp_path / "leads.csv"
    with path.open("w", newline="") as out:
        csv.writer(out).writerows([header, *_PADDED_ROWS])
    from_csv, csv_names = read_csv(path)
    assert [lead["number"] for lead in from_csv] == _TRIMMED
    # Only the number is trimmed: a custom field is sent as read.
    assert from_csv[0]["customField1"] == "Max"
    assert from_csv[0]["customField2"] == " Pune "
    # The same content as JSON Lines: each row in the wire form, its number as padded.
    lines = tmp_path / "leads.jsonl"
    with lines.open("w") as out:
        for row in _PADDED_ROWS:
            lead: dict[str, Any] = {"customField1": row[0], "number": row[1]}
            if agents := split_agents(row[2]):
                lead["agentsAssigned"] = agents
            lead["customField2"] = row[3]
            out.write(json.dumps(lead) + "\n")
    from_json_lines, _ = read_csv(lines)
    assert from_json_lines == from_csv
    for library in LIBRARIES:
        cells = zip(*_PADDED_ROWS, strict=True)
        frame = make_frame(library, {h: list(c) for h, c in zip(header, cells, strict=True)})
        leads, names = leads_from_frame(frame, chunk_rows=4)
        assert list(leads) == from_csv, library
        assert names == csv_names


@pytest.mark.parametrize("library", ["polars", "pandas", "arrow"])
def test_a_padded_number_in_a_frame_is_trimmed_whatever_its_type(
    library: str,
) -> None:
    pa = pytest.importorskip("pyarrow")
    padded = [" +919876543210\x1d", None, "\u2003+917994771185 "]
    expected = [{"number": "+919876543210"}, {}, {"number": "+917994771185"}]
    types = [pa.large_string(), pa.dictionary(pa.int32(), pa.string())]
    if hasattr(pa, "string_view"):
        types.append(pa.string_view())
    for dtype in types:
        table = pa.table({"number": pa.array(padded).cast(dtype)})
        if library == "polars":
            frame = pytest.importorskip("polars").from_arrow(table)
        elif library == "pandas":
            frame = table.to_pandas()
        else:
            frame = table
        leads, _ = leads_from_frame(frame)
        assert list(leads) == expected, (library, dtype)


def test_a_pandas_object_column_trims_its_strings_and_keeps_what_is_no_string() -> None:
    pd = pytest.importorskip("pandas")
    frames = [
        pd.DataFrame({"number": pd.Series([" +919876543210 ", 919876543210, None], dtype=object)}),
        pd.DataFrame({"number": pd.Series([" +919876543210 ", None, "x"], dtype="category")}),
    ]
    leads, _ = leads_from_frame(frames[0])
    assert list(leads) == [{"number": "+919876543210"}, {"number": 919876543210}, {}]
    leads, _ = leads_from_frame(frames[1])
    assert list(leads) == [{"number": "+919876543210"}, {}, {"number": "x"}]
    only_ints = pd.DataFrame({"number": pd.Series([1, 2], dtype=object)})
    assert list(leads_from_frame(only_ints).leads) == [{"number": 1}, {"number": 2}]
    # Without a null: every string stripped at once, or (one value no string) as above.
    no_null = pd.DataFrame({"number": pd.Series(["\x1e+919876543210 ", "\t12"], dtype=object)})
    assert list(leads_from_frame(no_null).leads) == [{"number": "+919876543210"}, {"number": "12"}]
    one_int = pd.DataFrame({"number": pd.Series([" +919876543210 ", 12], dtype=object)})
    assert list(leads_from_frame(one_int).leads) == [{"number": "+919876543210"}, {"number": 12}]


# -- moved from test_dataframes.py: the mapping as leads_from_frame applies it -----------


def test_without_an_agents_column_every_other_column_is_a_custom_field() -> None:
    frame = make_frame("polars", {"number": ["+919876543210"], "agentsAssigned": ["a;b"]})
    leads, names = leads_from_frame(frame, agents_column=None)
    assert list(leads) == [{"number": "+919876543210", "customField1": "a;b"}]
    assert names == {"customField1Name": "agentsAssigned"}


def test_custom_field_names_mapping_is_taken_as_is() -> None:
    frame = make_frame("arrow", {"number": ["+919876543210"], "a": ["1"]})
    _, names = leads_from_frame(frame, custom_field_names={"customField1Name": "Alpha"})
    assert names == {"customField1Name": "Alpha"}
    with pytest.raises(ValidationError, match="mapping or a list of names"):
        leads_from_frame(frame, custom_field_names="Alpha")


@pytest.mark.parametrize("library", ["polars", "pandas", "arrow"])
def test_a_missing_number_column_is_named_with_the_columns(library: str) -> None:
    frame = make_frame(library, {"phone": ["+919876543210"], "Name": ["x"]})
    with pytest.raises(
        ValidationError, match=r"no 'number' column; the columns are: 'phone', 'Name'"
    ):
        leads_from_frame(frame)


def test_two_number_columns_are_refused() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"number": ["+919876543210"], "NUMBER": ["+919876543211"]})
    with pytest.raises(ValidationError, match="2 columns are named 'number'"):
        leads_from_frame(frame)


def test_same_leads_as_the_cli_reads_from_a_csv(tmp_path: Path) -> None:
    pl = pytest.importorskip("polars")
    pytest.importorskip("pandas")
    columns = {
        "Name": ["Max", "Alex", "Sophia"],
        "NUMBER": ["+919876543210", "+917994771185", "12"],
        "agentsAssigned": ["a@x.com ; b@x.com", "c@x.com|d@x.com", "e@x.com"],
        "City": ["Pune", "Delhi", "Goa"],
    }
    path = tmp_path / "leads.csv"
    pl.DataFrame(columns).write_csv(path)
    source = open_source(str(path))
    try:
        from_csv = [lead for chunk in source.chunks() for lead in chunk]
    finally:
        source.close()
    for library in LIBRARIES:
        leads, names = leads_from_frame(make_frame(library, columns))
        assert list(leads) == from_csv, library
        assert names == source.custom_field_names


# -- the mapping itself ---------------------------------------------------------------


def test_map_columns_keys_indices_and_names() -> None:
    mapping = map_columns([" Name ", "Number", "agentsAssigned", ""])
    assert mapping.keys == ("customField1", "number", "agentsAssigned", "customField2")
    assert mapping.indices == (0, 1, 2, 3)
    assert mapping.every_column
    assert (mapping.number_index, mapping.agents_index) == (1, 2)
    assert mapping.custom_field_names == {
        "customField1Name": "Name",
        "customField2Name": "column 4",
    }
    chosen = map_columns(["a", "number", "b", "c"], columns=["C"])
    assert (chosen.keys, chosen.indices) == (("number", "customField1"), (1, 3))
    assert not chosen.every_column
    assert chosen.custom_field_names == {"customField1Name": "c"}
    assert map_columns(["number", "a"], columns=[]).custom_field_names is None
    unnamed = map_columns(["number", "", "a"], columns=["Column 2"])
    assert unnamed.custom_field_names == {"customField1Name": "column 2"}
    assert split_agents(" a@x.com ;b@x.com| c ") == ["a@x.com", "b@x.com", "c"]
    assert split_agents("  ") is None


@pytest.mark.parametrize(
    ("choose", "message"),
    [
        (
            {"columns": ["Name", "Nope"]},
            "columns= names 'Nope': no such column; the columns are: 'number', 'Name', "
            "'agentsAssigned'",
        ),
        ({"exclude_columns": ["nope"]}, "exclude_columns= names 'nope': no such column"),
        (
            {"exclude_columns": ["NUMBER"]},
            "exclude_columns= names 'number', the number column: it is always sent",
        ),
        (
            {"exclude_columns": ["agentsassigned"]},
            "names 'agentsAssigned', the agentsAssigned column: it is always sent",
        ),
        ({"columns": "Name"}, "columns= must be a list of column names, got the string"),
        (
            {"columns": ["Name"], "exclude_columns": ["Name"]},
            "give columns= or exclude_columns=, not both",
        ),
    ],
)
def test_choosing_columns_that_are_not_custom_fields_is_refused(
    choose: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        map_columns(["number", "Name", "agentsAssigned"], **choose)


def test_the_csv_reader_names_the_file_the_line_and_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("title\nnumber,Name\n+919876543210,Max\n")
    with pytest.raises(
        InputError,
        match=re.escape(
            f"{path}: --columns names 'City': no such column in the header (line 2); "
            "the columns are: 'number', 'Name'"
        ),
    ):
        open_source(str(path), skip_rows=1, columns=["City"])
    path.write_text("number,Number\n")
    with pytest.raises(
        InputError,
        match=re.escape(
            f"{path}: the header (line 1) has 2 columns named 'number' (case-insensitively); "
            "rename all but one"
        ),
    ):
        open_source(str(path))
