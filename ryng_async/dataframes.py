"""DataFrames as lead sources: pandas, polars, Arrow tables, mapped as the CLI maps a CSV.

``leads_from_frame(frame)`` returns the frame's rows as wire-form lead dicts, made a chunk
of rows at a time, and the ``customFieldNames`` its headers give:

    leads, names = leads_from_frame(frame)
    report = await client.bulk_append("42", leads, custom_field_names=names)

The column mapping is the CLI's: the ``number`` column (case-insensitive) holds the phone
numbers, an optional ``agentsAssigned`` column the agent usernames (separated by ``;`` or
``|``, or a column of lists), and every other column is a custom field in column order,
its header sent as its name. ``columns=`` or ``exclude_columns=`` choose the custom
fields sent (as the CLI's ``--columns`` and ``--exclude-columns``).

Each chunk is converted column by column by the frame's own library: custom fields are
cast to strings in one call per column (so a number or a date is sent as the library
writes it: ``42``, ``2024-05-01``; pandas writes booleans ``True``, polars ``true``),
agents are split by one regex call per column where the library has one, and the chunk's
columns are zipped into dicts in C. Whitespace around a number is dropped as the CLI drops
it in a CSV (`str.strip`'s characters, one library call per chunk); other cells are sent as
they are. A null custom field is left out of its lead; a null number makes the lead invalid
(``number: is required``), reported at its row's position. No Python code runs per cell
except for nulls and, with pandas, the agents column.

pandas, polars and pyarrow are optional: nothing here imports them until a frame of that
library is passed (install the one you use, or ``ryng-async[pandas]``, ``[polars]``,
``[arrow]``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from itertools import chain, repeat
from typing import Any, NamedTuple

from ._columns import (
    AGENT_SEPARATORS_PATTERN,
    NUMBER_SPACES,
    ColumnMapping,
    custom_field_names_from,
    map_columns,
    split_agents,
)
from ._exceptions import ConfigurationError, ValidationError

__all__ = ["DEFAULT_CHUNK_ROWS", "FrameLeads", "leads_from_frame"]

DEFAULT_CHUNK_ROWS = 4096
"""Rows converted at a time: enough to make the libraries' per-call overhead small, and
memory one chunk of dicts (about 2 MB). In benchmarks/bench_dataframe.py, 1,024 rows cost
pandas a third more CPU per row; 16,384 save pandas up to 15% and polars or Arrow nothing
measurable, for four times the memory."""

_Chunk = list[dict[str, Any]]
# Polars has no regex split: separators become this character, then a plain split.
_UNIT_SEPARATOR = "\x1f"


class FrameLeads(NamedTuple):
    """A frame's leads, and the campaign's ``customFieldNames`` from its headers.

    Unpack it: ``leads, names = leads_from_frame(frame)``.

    Attributes:
        leads: the rows as wire-form lead dicts, in row order, made lazily a chunk at a
            time (an iterator: iterate it once).
        custom_field_names: ``{"customField1Name": <header>, ...}`` (or the names you
            passed), None if the frame has no custom-field column. Pass it as
            ``custom_field_names=`` to ``bulk_append``.
    """

    leads: Iterator[dict[str, Any]]
    custom_field_names: dict[str, str] | None


def leads_from_frame(
    frame: Any,
    *,
    number_column: str = "number",
    agents_column: str | None = "agentsAssigned",
    custom_field_names: Mapping[str, str] | Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    columns: Collection[str] | None = None,
    exclude_columns: Collection[str] | None = None,
) -> FrameLeads:
    """Read a DataFrame's rows as leads, with the CLI's column mapping.

    Args:
        frame: a pandas or polars ``DataFrame``, a pyarrow ``Table``, ``RecordBatch`` or
            ``RecordBatchReader`` (read batch by batch: a Parquet file streamed with
            ``pyarrow.parquet.ParquetFile(path).iter_batches`` fits in one), or any
            object exporting an Arrow stream (``__arrow_c_stream__``, read with
            pyarrow). The pandas index is ignored.
        number_column: the column of phone numbers (case-insensitive); its values must
            be strings, in E.164 form (``"+919876543210"``) to be valid; whitespace
            around them is dropped (``" +919876543210 "`` is valid).
        agents_column: the column of agent usernames, if present (case-insensitive):
            strings with ``;`` or ``|`` between usernames, or lists of strings. None: no
            agents column (every other column is a custom field).
        custom_field_names: the campaign's custom field names instead of the headers:
            a mapping (``{"customField1Name": "Name"}``) or the names in order.
        chunk_rows: rows converted at a time.
        columns: send only these custom-field columns (case-insensitive; the number
            and agents columns are always sent), numbered in column order.
        exclude_columns: send every custom-field column but these.

    Returns:
        `FrameLeads`: ``(leads, custom_field_names)``.

    Raises:
        ValidationError: no number column (or two), a number column that does not hold
            strings, a custom-field column of nested values (lists, structs), or a name
            in ``columns`` or ``exclude_columns`` that is no custom-field column, before
            any row is read.
        ConfigurationError: ``chunk_rows`` is not a positive integer.
        TypeError: ``frame`` is not a frame this function reads.
    """
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ConfigurationError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    reader = _reader_for(frame)
    mapping = map_columns(
        reader.header,
        number_column=number_column,
        agents_column=agents_column,
        columns=columns,
        exclude_columns=exclude_columns,
    )
    convert = reader.converter(mapping)
    names = (
        mapping.custom_field_names
        if custom_field_names is None
        else custom_field_names_from(custom_field_names)
    )
    # chain.from_iterable hands the dicts on in C: no Python frame per lead.
    return FrameLeads(chain.from_iterable(map(convert, reader.chunks(chunk_rows))), names)


# -- shared steps ---------------------------------------------------------------------


def _zip_rows(keys: list[str], columns: list[list[Any]]) -> _Chunk:
    """The chunk's rows as dicts, built in C from its columns."""
    return list(map(dict, map(zip, repeat(keys), zip(*columns, strict=True))))


def _drop(rows: _Chunk, key: str, positions: Iterator[int] | list[int]) -> None:
    """Leave ``key`` out of the rows at ``positions`` (its nulls)."""
    for position in positions:
        del rows[position][key]


def _column_error(name: str, dtype: object, what: str) -> ValidationError:
    return ValidationError(f"column {name!r} holds {dtype} values: {what}")


def _number_error(name: str, dtype: object, fix: str) -> ValidationError:
    return _column_error(
        name,
        dtype,
        "phone numbers must be strings in E.164 form ('+919876543210'); format the "
        f"column as strings first, e.g. {fix}",
    )


class _Reader:
    """One library's way to read a frame: its headers, its chunks, a chunk's leads."""

    header: list[str]

    def chunks(self, size: int) -> Iterator[Any]:
        raise NotImplementedError

    def converter(self, mapping: ColumnMapping) -> Callable[[Any], _Chunk]:
        raise NotImplementedError


def _reader_for(frame: Any) -> _Reader:
    module = type(frame).__module__.partition(".")[0]
    kind = type(frame).__name__
    if module == "polars":
        if kind == "LazyFrame":
            raise TypeError("a polars LazyFrame: pass frame.collect() (a DataFrame)")
        if kind == "DataFrame":
            return _PolarsReader(frame)
    elif module == "pandas" and kind == "DataFrame":
        return _PandasReader(frame)
    elif module == "pyarrow" and kind in {"Table", "RecordBatch", "RecordBatchReader"}:
        return _ArrowReader(frame)
    if hasattr(frame, "__arrow_c_stream__"):
        pa = importlib.import_module("pyarrow")
        return _ArrowReader(pa.RecordBatchReader.from_stream(frame))
    raise TypeError(
        "leads_from_frame reads a pandas or polars DataFrame, a pyarrow Table, RecordBatch "
        f"or RecordBatchReader, or an Arrow stream; got {type(frame).__qualname__}. For "
        "rows as dicts, pass them to bulk_append directly"
    )


# -- polars ---------------------------------------------------------------------------


class _PolarsReader(_Reader):
    def __init__(self, frame: Any) -> None:
        self.pl = importlib.import_module("polars")
        self.frame = frame
        self.header = list(frame.columns)

    def chunks(self, size: int) -> Iterator[Any]:
        frame = self.frame
        return (frame.slice(start, size) for start in range(0, frame.height, size))

    def converter(self, mapping: ColumnMapping) -> Callable[[Any], _Chunk]:
        pl = self.pl
        schema = self.frame.schema
        exprs = []
        for index, key in zip(mapping.indices, mapping.keys, strict=True):
            name = self.header[index]
            dtype = schema[name]
            column = pl.col(name)
            if key == "number":
                if dtype not in (pl.String, pl.Categorical, pl.Null) and not isinstance(
                    dtype, pl.Enum
                ):
                    raise _number_error(name, dtype, "pl.format('+{}', pl.col(...))")
                # Explicit characters: polars' own whitespace keeps \x1c-\x1f.
                column = column.cast(pl.String).str.strip_chars(NUMBER_SPACES)
            elif key == "agentsAssigned":
                if isinstance(dtype, pl.List):
                    column = column.cast(pl.List(pl.String))
                else:
                    if dtype.is_nested():
                        raise _column_error(name, dtype, "agents are strings or lists of them")
                    text = column.cast(pl.String).str.strip_chars()
                    column = (
                        pl.when(text == "")
                        .then(None)
                        .otherwise(
                            text.str.replace_all(
                                AGENT_SEPARATORS_PATTERN, _UNIT_SEPARATOR
                            ).str.split(_UNIT_SEPARATOR)
                        )
                    )
            else:
                if dtype.is_nested() or dtype == pl.Object:
                    raise _column_error(name, dtype, "a custom field is one string")
                column = column.cast(pl.String)
            exprs.append(column.alias(key))
        keys = list(mapping.keys)

        def convert(chunk: Any) -> _Chunk:
            converted = chunk.select(exprs)
            series = converted.get_columns()
            rows = _zip_rows(keys, [s.to_list() for s in series])
            for key, values in zip(keys, series, strict=True):
                if values.null_count():
                    _drop(rows, key, values.is_null().arg_true().to_list())
            return rows

        return convert


# -- pandas ---------------------------------------------------------------------------


class _PandasReader(_Reader):
    def __init__(self, frame: Any) -> None:
        self.pd = importlib.import_module("pandas")
        self.frame = frame
        self.header = [str(title) for title in frame.columns]

    def chunks(self, size: int) -> Iterator[Any]:
        frame = self.frame
        return (frame.iloc[start : start + size] for start in range(0, len(frame), size))

    def converter(self, mapping: ColumnMapping) -> Callable[[Any], _Chunk]:
        api = self.pd.api.types
        kinds: list[str] = []
        for index, key in zip(mapping.indices, mapping.keys, strict=True):
            dtype = self.frame.dtypes.iloc[index]
            name = self.header[index]
            textual = api.is_string_dtype(dtype) or api.is_object_dtype(dtype)
            if key == "number" and not (textual or isinstance(dtype, self.pd.CategoricalDtype)):
                raise _number_error(name, dtype, "'+' + frame['number'].astype(str)")
            if key == "number":
                # A value that is no string is an invalid lead, named so: kept as it is.
                strings = isinstance(dtype, self.pd.StringDtype)
                kinds.append("number" if strings else "loose number")
            elif key == "agentsAssigned":
                kinds.append("agents")
            elif isinstance(dtype, self.pd.StringDtype):
                kinds.append("as is")
            else:
                kinds.append("cast")
        keys = list(mapping.keys)
        indices = mapping.indices

        def convert(chunk: Any) -> _Chunk:
            columns: list[list[Any]] = []
            nulls: list[tuple[str, list[int]]] = []
            for index, key, kind in zip(indices, keys, kinds, strict=True):
                series = chunk.iloc[:, index]
                missing = series.isna().to_numpy()
                if kind == "agents":
                    values = list(map(_agents, series.tolist(), missing.tolist()))
                    # A null or empty agents cell gives no agents, as in a CSV.
                    nulls.append((key, [i for i, agents in enumerate(values) if agents is None]))
                    columns.append(values)
                    continue
                if missing.any():
                    nulls.append((key, missing.nonzero()[0].tolist()))
                if kind == "cast":
                    series = series.astype(str)
                elif kind == "number":
                    series = series.str.strip()
                elif kind == "loose number":
                    columns.append(_pandas_loose_numbers(series, bool(missing.any())))
                    continue
                columns.append(series.tolist())
            rows = _zip_rows(keys, columns)
            for key, positions in nulls:
                _drop(rows, key, positions)
            return rows

        return convert


def _pandas_loose_numbers(series: Any, missing: bool) -> list[Any]:
    """An object or categorical column's strings stripped by ``str.strip``.

    Other values are kept as they are (``.str`` makes them NaN: they are taken back).
    """
    values: list[Any] = series.tolist()
    if not missing:
        try:
            # In C: pandas' own .str.strip calls a Python lambda a value here (7x slower).
            return list(map(str.strip, values))
        except TypeError:  # a value that is no string
            pass
    try:
        stripped = series.str.strip()
    except AttributeError:  # not one string in the column: nothing to strip
        return values
    result: list[Any] = stripped.where(stripped.notna(), series).tolist()
    return result


def _agents(value: Any, missing: bool) -> Any:
    if missing:
        return None
    if isinstance(value, str):
        return split_agents(value)
    if isinstance(value, list | tuple):
        return list(value)
    to_list = getattr(value, "tolist", None)  # a numpy array, from a column of lists
    return to_list() if to_list is not None else value


# -- Arrow ----------------------------------------------------------------------------


class _ArrowReader(_Reader):
    def __init__(self, frame: Any) -> None:
        self.pa = importlib.import_module("pyarrow")
        self.pc = importlib.import_module("pyarrow.compute")
        self.frame = frame
        self.schema = frame.schema
        self.header = list(self.schema.names)

    def chunks(self, size: int) -> Iterator[Any]:
        frame = self.frame
        if type(frame).__name__ == "RecordBatchReader":
            return (
                batch.slice(start, size)
                for batch in frame
                for start in range(0, batch.num_rows, size)
            )
        return (frame.slice(start, size) for start in range(0, frame.num_rows, size))

    def converter(self, mapping: ColumnMapping) -> Callable[[Any], _Chunk]:
        pa, pc = self.pa, self.pc
        types = pa.types
        is_view = getattr(types, "is_string_view", _never)  # pyarrow >= 16
        steps: list[Callable[[Any], Any]] = []
        for index, key in zip(mapping.indices, mapping.keys, strict=True):
            field = self.schema.field(index)
            dtype = field.type
            name = self.header[index]
            # The trim kernels read string and large_string, not a view (cast first).
            is_utf8 = types.is_string(dtype) or types.is_large_string(dtype)
            is_text = is_utf8 or is_view(dtype)
            if key == "number":
                if not (is_text or types.is_dictionary(dtype) or types.is_null(dtype)):
                    raise _number_error(name, dtype, "pc.binary_join_element_wise('+', ...)")
                steps.append(_arrow_numbers(pa, pc, cast=not is_utf8))
            elif key == "agentsAssigned":
                if types.is_list(dtype) or types.is_large_list(dtype):
                    steps.append(_identity)
                elif types.is_nested(dtype):
                    raise _column_error(name, dtype, "agents are strings or lists of them")
                else:
                    steps.append(_arrow_agents(pa, pc, is_text=is_utf8))
            else:
                if types.is_nested(dtype):
                    raise _column_error(name, dtype, "a custom field is one string")
                steps.append(_identity if is_text else _cast_to(pc, pa.string()))
        keys = list(mapping.keys)
        indices = mapping.indices

        def convert(chunk: Any) -> _Chunk:
            columns = [step(chunk.column(i)) for i, step in zip(indices, steps, strict=True)]
            # to_pylist builds the dicts in C, faster than zipping the columns' lists.
            rows: _Chunk = pa.Table.from_arrays(columns, names=keys).to_pylist()
            for key, column in zip(keys, columns, strict=True):
                if column.null_count:
                    _drop(rows, key, pc.indices_nonzero(column.is_null()).to_pylist())
            return rows

        return convert


def _never(_: object) -> bool:
    return False


def _identity(column: Any) -> Any:
    return column


def _cast_to(pc: Any, target: Any) -> Callable[[Any], Any]:
    def cast(column: Any) -> Any:
        return pc.cast(column, target)

    return cast


def _arrow_numbers(pa: Any, pc: Any, *, cast: bool) -> Callable[[Any], Any]:
    # utf8_trim_whitespace drops what str.strip drops (Zs, or bidi class WS, B or S).
    def trim(column: Any) -> Any:
        return pc.utf8_trim_whitespace(pc.cast(column, pa.string()) if cast else column)

    return trim


def _arrow_agents(pa: Any, pc: Any, *, is_text: bool) -> Callable[[Any], Any]:
    def split(column: Any) -> Any:
        text = pc.utf8_trim_whitespace(column if is_text else pc.cast(column, pa.string()))
        parts = pc.split_pattern_regex(text, AGENT_SEPARATORS_PATTERN)
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, parts.type), parts)

    return split
