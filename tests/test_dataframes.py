"""DataFrames as lead sources: each library's conversion, nulls, errors, and a real load.

The column mapping they share with the CLI's CSV reader is tested in test_columns.py.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from conftest import FAST_RETRY, TOKEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_columns import LIBRARIES, make_frame

from ryng_async import ConfigurationError, RyngClient, ValidationError
from ryng_async._columns import map_columns, split_agents
from ryng_async.dataframes import FrameLeads, leads_from_frame
from ryng_async.testing import FakeRyngServer

pl = pytest.importorskip("polars")
pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")


def oracle(
    columns: dict[str, list[Any]], agents: str | None = "agentsAssigned"
) -> list[dict[str, Any]]:
    """The expected leads, built row by row in plain Python from the shared mapping (the
    number stripped as the CLI strips a CSV's number cell)."""
    header = list(columns)
    mapping = map_columns(header, agents_column=agents)
    values = list(columns.values())
    rows = []
    for cells in zip(*values, strict=True):
        row: dict[str, Any] = {}
        for key, cell in zip(mapping.keys, cells, strict=True):
            if cell is None:
                continue
            if key == "agentsAssigned":
                split = split_agents(cell)
                if split is not None:
                    row[key] = split
            elif key == "number":
                row[key] = cell.strip()
            else:
                row[key] = cell
        rows.append(row)
    return rows


SAMPLE = {
    "Number": ["+919876543210", "+917994771185", None, "+919876543211"],
    "Name": ["Max", None, "Sophia", ""],
    "agentsassigned": ["a@x.com; b@x.com", "c@x.com|d@x.com", "", None],
    "City": ["Pune", "Delhi", None, "Goa"],
}


@pytest.mark.parametrize("library", LIBRARIES)
def test_rows_map_like_the_cli(library: str) -> None:
    leads, names = leads_from_frame(make_frame(library, SAMPLE), chunk_rows=3)
    assert list(leads) == [
        {
            "number": "+919876543210",
            "customField1": "Max",
            "agentsAssigned": ["a@x.com", "b@x.com"],
            "customField2": "Pune",
        },
        {
            "number": "+917994771185",
            "agentsAssigned": ["c@x.com", "d@x.com"],
            "customField2": "Delhi",
        },
        {"customField1": "Sophia"},  # a null number: an invalid lead, still in its place
        {"number": "+919876543211", "customField1": "", "customField2": "Goa"},
    ]
    assert names == {"customField1Name": "Name", "customField2Name": "City"}


def test_result_unpacks_and_names_its_parts() -> None:
    result = leads_from_frame(make_frame("polars", {"number": ["+919876543210"]}))
    assert isinstance(result, FrameLeads)
    assert result.custom_field_names is None
    leads, names = result
    assert list(leads) == [{"number": "+919876543210"}]
    assert names is None


@pytest.mark.parametrize("library", ["polars", "pandas", "arrow"])
def test_non_string_custom_fields_are_cast_column_wise(library: str) -> None:
    data = {"number": ["+919876543210", "+919876543211"], "Age": [41, None]}
    if library == "polars":
        frame = pl.DataFrame(data, schema={"number": pl.String, "Age": pl.Int64})
    elif library == "pandas":
        frame = pd.DataFrame(data).astype({"Age": "Int64"})
    else:
        frame = pa.table(data, schema=pa.schema([("number", pa.string()), ("Age", pa.int64())]))
    leads, _ = leads_from_frame(frame)
    assert list(leads) == [
        {"number": "+919876543210", "customField1": "41"},
        {"number": "+919876543211"},
    ]


@pytest.mark.parametrize("library", ["polars", "pandas", "arrow"])
def test_agents_may_be_lists(library: str) -> None:
    data = {"number": ["+919876543210", "+919876543211"], "agentsAssigned": [["a@x.com"], None]}
    if library == "polars":
        frame = pl.DataFrame(data)
    elif library == "pandas":
        frame = pd.DataFrame(data)
    else:
        frame = pa.table(data)
    leads, names = leads_from_frame(frame)
    assert list(leads) == [
        {"number": "+919876543210", "agentsAssigned": ["a@x.com"]},
        {"number": "+919876543211"},
    ]
    assert names is None


@pytest.mark.parametrize("library", LIBRARIES)
def test_columns_are_named_by_the_caller(library: str) -> None:
    columns = {"phone": ["+919876543210"], "agents": ["a@x.com"], "agentsAssigned": ["x"]}
    leads, names = leads_from_frame(
        make_frame(library, columns),
        number_column="PHONE",
        agents_column="agents",
        custom_field_names=["Legacy"],
    )
    assert list(leads) == [
        {"number": "+919876543210", "agentsAssigned": ["a@x.com"], "customField1": "x"}
    ]
    assert names == {"customField1Name": "Legacy"}


@pytest.mark.parametrize("library", ["polars", "pandas", "arrow"])
def test_a_numeric_number_column_is_refused_before_reading(library: str) -> None:
    data = {"number": [919876543210]}
    frame = {"polars": pl.DataFrame, "pandas": pd.DataFrame, "arrow": pa.table}[library](data)
    with pytest.raises(
        ValidationError,
        match=r"column 'number' holds .*64 values: phone numbers must be strings in E\.164",
    ):
        leads_from_frame(frame)


@pytest.mark.parametrize("library", ["polars", "arrow"])
def test_a_nested_custom_field_is_refused(library: str) -> None:
    data = {"number": ["+919876543210"], "tags": [["a", "b"]]}
    frame = pl.DataFrame(data) if library == "polars" else pa.table(data)
    with pytest.raises(
        ValidationError, match=r"column 'tags' holds .*a custom field is one string"
    ):
        leads_from_frame(frame)


def test_arrow_string_views_are_read_as_strings() -> None:
    if not hasattr(pa, "string_view"):
        pytest.skip("pyarrow < 16 has no string_view")
    view = pa.string_view()
    table = pa.table(
        {
            "number": pa.array([" +919876543210 "], view),
            "agentsAssigned": pa.array([" a@x.com ; b@x.com "], view),
            "Name": pa.array([" Max "], view),
        }
    )
    leads, _ = leads_from_frame(table)
    assert list(leads) == [
        {
            "number": "+919876543210",
            "agentsAssigned": ["a@x.com", "b@x.com"],
            "customField1": " Max ",
        }
    ]


def test_what_is_not_a_frame_is_refused() -> None:
    with pytest.raises(TypeError, match="got list"):
        leads_from_frame([{"number": "+919876543210"}])
    with pytest.raises(TypeError, match="LazyFrame"):
        leads_from_frame(pl.LazyFrame({"number": ["+919876543210"]}))
    with pytest.raises(ConfigurationError, match="chunk_rows"):
        leads_from_frame(pl.DataFrame({"number": ["+1"]}), chunk_rows=0)


def test_an_arrow_stream_object_is_read() -> None:
    class Exporter:
        def __init__(self, table: Any) -> None:
            self._table = table

        def __arrow_c_stream__(self, requested_schema: object = None) -> object:
            return self._table.__arrow_c_stream__(requested_schema)

    table = pa.table({"number": ["+919876543210"], "x": ["1"]})
    leads, _ = leads_from_frame(Exporter(table))
    assert list(leads) == [{"number": "+919876543210", "customField1": "1"}]


def test_rows_are_made_lazily() -> None:
    frame = pl.DataFrame({"number": [f"+9198{i:08d}" for i in range(10_000)]})
    leads, _ = leads_from_frame(frame, chunk_rows=100)
    assert next(leads) == {"number": "+919800000000"}
    assert sum(1 for _ in leads) == 9_999


_cell = st.one_of(st.none(), st.text(alphabet="ab; |x.@", max_size=8))
_space = st.text(alphabet=" \t\xa0\x1c\x1f\u3000\u2028\u200b", max_size=2)
_number = st.one_of(
    st.none(),
    st.just(""),
    st.tuples(_space, st.integers(10**9, 10**12), _space).map(lambda p: f"{p[0]}+{p[1]}{p[2]}"),
    st.just("bad"),
)


@st.composite
def _tables(draw: st.DrawFn) -> tuple[dict[str, list[Any]], int]:
    rows = draw(st.integers(0, 12))
    headers = draw(
        st.lists(st.sampled_from(["Name", "City", "agentsAssigned", "Extra"]), unique=True)
    )
    position = draw(st.integers(0, len(headers)))
    headers.insert(position, "number")
    columns = {
        header: draw(
            st.lists(_number if header == "number" else _cell, min_size=rows, max_size=rows)
        )
        for header in headers
    }
    return columns, draw(st.integers(1, 5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tables())
def test_every_library_gives_the_rows_plain_python_gives(
    table: tuple[dict[str, list[Any]], int],
) -> None:
    columns, chunk_rows = table
    expected = oracle(columns)
    for library in LIBRARIES:
        leads, names = leads_from_frame(make_frame(library, columns), chunk_rows=chunk_rows)
        assert list(leads) == expected, library
        assert names == map_columns(list(columns)).custom_field_names


def test_optional_libraries_are_not_imported_until_a_frame_is_read() -> None:
    code = (
        "import sys, ryng_async, ryng_async.dataframes, ryng_async.sync\n"
        "loaded = {'pandas', 'polars', 'pyarrow', 'prometheus_client', 'opentelemetry'}\n"
        "print(sorted(loaded & set(sys.modules)))\n"
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.anyio
async def test_a_frame_loads_with_an_exact_report() -> None:
    count = 2_500
    numbers: list[str | None] = [f"+9198{i:08d}" for i in range(count)]
    numbers[7] = None
    numbers[1234] = "12345"
    frame = pl.DataFrame(
        {
            "number": numbers,
            "Name": [f"Customer {i}" if i % 10 else None for i in range(count)],
            "agentsAssigned": ["a@x.com;b@x.com" if i % 2 else "" for i in range(count)],
        }
    )
    leads, names = leads_from_frame(frame, chunk_rows=300)
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY
        ) as client:
            report = await client.bulk_append(
                "42", leads, batch_size=400, custom_field_names=names, agent_mapping="inline"
            )
        received = server.leads
        bodies = [r.request for r in server.requests]
    assert report.finished
    assert (report.total, report.accepted, report.invalid) == (count, count - 2, 2)
    assert [(lead.position, lead.field) for lead in report.invalid_leads] == [
        (7, "number"),
        (1234, "number"),
    ]
    assert len(received) == count - 2
    assert received[0] == {"number": "+919800000000"}
    assert received[1] == {
        "number": "+919800000001",
        "customField1": "Customer 1",
        "agentsAssigned": ["a@x.com", "b@x.com"],
    }
    assert all(
        body is not None and body.custom_field_names == {"customField1Name": "Name"}
        for body in bodies
    )


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.anyio
async def test_a_frame_passed_straight_to_bulk_append_is_read_as_rows(library: str) -> None:
    # Iterating a frame yields its columns; bulk_append reads its rows all the same.
    columns = {
        "number": [f"+9198{i:08d}" for i in range(7)],
        "Name": [f"Customer {i}" for i in range(7)],
    }
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY
        ) as client:
            report = await client.bulk_append("42", make_frame(library, columns), batch_size=3)
            given = await client.bulk_append(
                "43", make_frame(library, columns), custom_field_names={"customField1Name": "N"}
            )
        bodies = [r.request for r in server.requests]
    assert (report.total, report.accepted, report.invalid) == (7, 7, 0)
    assert given.accepted == 7
    assert server.leads_for("42") == oracle(columns)
    assert [b.custom_field_names if b else None for b in bodies] == [
        *[{"customField1Name": "Name"}] * 3,
        {"customField1Name": "N"},
    ]


@pytest.mark.anyio
async def test_a_lazy_frame_is_refused_before_anything_is_sent() -> None:
    lazy = pl.DataFrame({"number": ["+919800000000"]}).lazy()
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with RyngClient(base_url=server.base_url, access_token=TOKEN) as client:
            with pytest.raises(TypeError, match=r"LazyFrame: pass frame.collect\(\)"):
                await client.bulk_append("42", lazy)
        assert server.received_requests == 0
