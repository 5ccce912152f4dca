"""Lead files for ``ryng-async append``: CSV and JSON Lines, read lazily, parsed off the loop.

A `LeadSource` parses its file a chunk of rows at a time; `aiter_leads` runs each chunk's
reading and parsing in a daemon thread (`run_blocking`), so a slow pipe on stdin never
holds up the event loop that sends the requests (whose timeouts would otherwise fire and
turn batches the server answered into ``unknown``), and memory holds one chunk whatever
the size of the file. Measured, the thread costs about what parsing on the loop does
(CSV and JSON Lines alike, within this machine's noise); the pipe decides.

Each data row becomes exactly one item handed to the SDK, in file order: a wire-form dict
(the SDK validates them a batch at a time), or a `RejectedRow` for a row that could not
become a lead (a wrong number of columns, a line that is not JSON, a number libphonenumber
refuses). The SDK counts a `RejectedRow` as an invalid lead at its position, and the
command shows the row's own reason.

Input positions (the SDK's ``lead #N``, from 0) map to file line numbers through a
`LineMap` (in ``_rows``). A CSV's header is mapped by `ryng_async._columns`, as a
DataFrame's is. Whitespace around a number (a CSV cell, a JSON Lines ``"number"``) is
dropped as ``str.strip()`` drops it, other values are sent as read: one content, one lead.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import io
import os
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import islice
from typing import IO, Any

import msgspec

from .. import ValidationError
from .._columns import map_columns, split_agents
from ._lead_rows import leads_maker
from ._rows import InputError, LineMap, RejectedRow, strip_numbers
from ._threads import lead_chunks, run_blocking

__all__ = [
    "ENCODING_ERRORS",
    "FORMATS",
    "InputError",
    "LeadSource",
    "LineMap",
    "RejectedRow",
    "aiter_leads",
    "guess_format",
    "lead_chunks",
    "number_normalizer",
    "open_source",
    "run_blocking",
    "source_from_args",
]

FORMATS = ("csv", "jsonl")
ENCODING_ERRORS = ("strict", "replace")
CSV_CHUNK_ROWS = 2048
"""CSV rows parsed per trip to the worker thread."""
JSONL_CHUNK_BYTES = 256 * 1024
"""JSON Lines bytes decoded per trip to the worker thread."""
MAX_LINE_BYTES = 16 << 20
"""The longest JSON line read (a lead is a few hundred bytes; this is a runaway file)."""
_READ_BUFFER = 1 << 20
_BOM = codecs.BOM_UTF8
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
}
# A typed decode costs no more than a plain one and refuses a non-object line or a value
# of the wrong type in C; the SDK still checks numbers and keys, a batch at a time.
_typed_decoder = msgspec.json.Decoder(dict[str, str | list[str]])
_plain_decoder = msgspec.json.Decoder()


def guess_format(path: str) -> str | None:
    """The format a file's extension says (``.csv``, ``.jsonl``...), or None."""
    name = path.lower().removesuffix(".gz")
    return _EXTENSIONS.get(os.path.splitext(name)[1])


class LeadSource:
    """A lead file being read: its rows as chunks of leads, and what is known about it.

    Attributes:
        name: the path, or ``"<stdin>"``.
        format: ``"csv"`` or ``"jsonl"``.
        total_bytes: the file's size when known (a regular file), else None.
        lines: input position to line number.
        rejected: the rows that could not become leads, by input position.
        rows: data rows read so far (the next row's input position).
        blank_rows: rows skipped because every cell was empty.
        custom_field_names: ``customField<N>Name`` from a CSV header, else None.
        has_agents: the CSV has an agents column.
        header: the CSV header's cells, else empty.
    """

    def __init__(self, name: str, fmt: str, handle: IO[bytes], total_bytes: int | None) -> None:
        self.name = name
        self.format = fmt
        self.total_bytes = total_bytes
        self.lines = LineMap()
        self.rejected: dict[int, RejectedRow] = {}
        self.rows = 0
        self.blank_rows = 0
        self.custom_field_names: dict[str, str] | None = None
        self.has_agents = False
        self.header: list[str] = []
        self._handle = handle
        self._tell: Callable[[], int] | None = handle.tell if total_bytes is not None else None
        self._chunks: Iterator[list[Any]] | None = None
        self.also_close: list[IO[bytes]] = []
        self.is_stdin = False
        self.skipped_lines = 0  # --skip-rows: lines above the header, not read as rows

    @property
    def bytes_read(self) -> int | None:
        """Bytes read from the file so far, when the file's size is known."""
        if self._tell is None:
            return None
        try:
            return self._tell()
        except (OSError, ValueError):  # closed meanwhile
            return self.total_bytes

    def chunks(self) -> Iterator[list[Any]]:
        """The leads, a chunk at a time (blocking: run each step off the event loop)."""
        if self._chunks is None:
            raise InputError(f"{self.name}: not prepared")  # pragma: no cover - a bug
        return self._chunks

    def line_of(self, position: int) -> int | None:
        """The file line the row at ``position`` starts on."""
        line = self.lines.line(position)
        return None if line is None else line + self.skipped_lines

    def close(self) -> None:
        """Close the file (stdin is left open)."""
        if not self.is_stdin:
            self._handle.close()
        for handle in self.also_close:
            handle.close()

    def _reject(self, position: int, field: str | None, reason: str) -> RejectedRow:
        row = RejectedRow(field, reason)
        self.rejected[position] = row
        return row

    def _normalize_numbers(self, leads: list[Any], normalize: Callable[[object], str]) -> None:
        """Normalize the numbers of a chunk whose first lead is at position ``rows``."""
        for index, lead in enumerate(leads):
            if isinstance(lead, dict) and "number" in lead:
                try:
                    lead["number"] = normalize(lead["number"])
                except ValidationError as exc:
                    leads[index] = self._reject(self.rows + index, "number", exc.reason)


# -- CSV ------------------------------------------------------------------------------


class _CsvSource(LeadSource):
    def at(self, line: int) -> int:
        """The file's line number of the CSV reader's ``line`` (after --skip-rows)."""
        return line + self.skipped_lines

    @property
    def header_line(self) -> int:
        """The header's line in the file."""
        return self._header_end + self.skipped_lines

    def prepare(
        self,
        *,
        encoding: str,
        encoding_errors: str,
        delimiter: str,
        normalize: Callable[[object], str] | None,
        **choose: Any,
    ) -> None:
        """Read the header and map its columns (``choose``: `map_columns`' options)."""
        self._encoding = encoding
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"  # a BOM at the start is not part of the first header
        self._text = io.TextIOWrapper(
            self._handle, encoding=encoding, errors=encoding_errors, newline=""
        )
        self._reader = csv.reader(self._text, delimiter=delimiter, strict=False)
        self._normalize = normalize
        self.header = self._read_header()
        self._width = len(self.header)
        try:
            mapping = map_columns(
                self.header, where=f"the header (line {self.header_line})", cli=True, **choose
            )
        except ValidationError as exc:
            raise InputError(f"{self.name}: {exc}") from None
        self._make_leads = leads_maker(mapping.keys, mapping.indices)
        self._agents_index = mapping.agents_index
        self.has_agents = mapping.agents_index is not None
        self.custom_field_names = mapping.custom_field_names
        self._chunks = self._read_chunks()

    def _read_header(self) -> list[str]:
        try:
            for row in self._reader:
                if any(cell.strip() for cell in row):
                    self._header_end = self._reader.line_num
                    return [cell.strip() for cell in row]
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc) from None
        except csv.Error as exc:
            raise InputError(f"{self.name}: line {self.at(self._reader.line_num)}: {exc}") from None
        raise InputError(f"{self.name}: the file is empty (no header row)")

    def _decode_error(self, exc: UnicodeDecodeError) -> InputError:
        where = self._locate(exc)
        return InputError(
            f"{self.name}: {where}: not valid {self._encoding} ({exc.reason}); pass the "
            "file's encoding with --encoding (e.g. --encoding cp1252 or latin-1)"
        )

    def _locate(self, exc: UnicodeDecodeError) -> str:
        """Name the line and byte of a decoding error, reading the file again if we can.

        The text layer decodes ahead of the rows, in chunks, so the error's own position
        is within a chunk; a regular file is read again (only on this error path).
        """
        if self.total_bytes is None:
            return f"after line {self.at(self._reader.line_num)}"
        decoder = codecs.getincrementaldecoder(self._encoding)()
        offset = newlines = 0
        try:
            with open(self.name, "rb") as again:
                while chunk := again.read(_READ_BUFFER):
                    try:
                        decoder.decode(chunk)
                    except UnicodeDecodeError as error:
                        at = max(error.start - (len(error.object) - len(chunk)), 0)
                        line = newlines + chunk.count(b"\n", 0, at) + 1
                        bad = chunk[at : at + 4]
                        return f"line {line}, byte {offset + at} ({bad!r}...)"
                    offset += len(chunk)
                    newlines += chunk.count(b"\n")
        except OSError:
            pass
        return f"after line {self.at(self._reader.line_num)}"

    def _read_chunks(self) -> Iterator[list[Any]]:
        reader = self._reader
        end = self._header_end  # the line the last row read ended on
        width = self._width
        while True:
            try:
                rows = list(islice(reader, CSV_CHUNK_ROWS))
            except UnicodeDecodeError as exc:
                raise self._decode_error(exc) from None
            except csv.Error as exc:
                raise InputError(f"{self.name}: line {self.at(reader.line_num)}: {exc}") from None
            if not rows:
                return
            last = reader.line_num
            if last - end == len(rows) and set(map(len, rows)) == {width}:
                # Every row is one line, as wide as the header: the common case.
                self.lines.note(self.rows, end + 1)
                leads = self._to_leads(rows)
            else:
                leads = self._irregular(rows, end)
            end = last
            if self._normalize is not None:
                self._normalize_numbers(leads, self._normalize)
            self.rows += len(leads)
            yield leads

    def _to_leads(self, rows: list[list[str]]) -> list[Any]:
        # Spaces around a number are no part of it (custom fields kept as they are).
        leads: list[Any] = self._make_leads(rows)
        if self._agents_index is not None:
            for lead in leads:
                agents = split_agents(lead["agentsAssigned"])
                if agents is None:
                    del lead["agentsAssigned"]
                else:
                    lead["agentsAssigned"] = agents
        return leads

    def _irregular(self, rows: list[list[str]], end: int) -> list[Any]:
        """Rows of a chunk holding blank lines, multi-line rows or wrong widths."""
        width = self._width
        leads: list[Any] = []
        good: list[list[str]] = []
        good_at: list[int] = []
        position = self.rows
        for row in rows:
            start = end + 1
            # A row spans one line plus the line breaks inside its quoted fields (as the
            # text layer splits lines: at \n, \r\n or \r).
            end = start + sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in row)
            if not any(row):
                self.blank_rows += 1
                continue
            self.lines.note(position, start)
            if len(row) != width:
                if len(row) > width and not any(row[width:]):
                    row = row[:width]  # noqa: PLW2901 - trailing empty cells: a trailing comma
                else:
                    leads.append(
                        self._reject(
                            position,
                            None,
                            f"the row has {len(row)} columns where the header has {width}",
                        )
                    )
                    position += 1
                    continue
            good.append(row)
            good_at.append(len(leads))
            leads.append(None)
            position += 1
        for slot, lead in zip(good_at, self._to_leads(good), strict=True):
            leads[slot] = lead
        return leads


# -- JSON Lines ----------------------------------------------------------------------


class _JsonLinesSource(LeadSource):
    def prepare(self, *, normalize: Callable[[object], str] | None) -> None:
        self._normalize = normalize
        self._chunks = self._read_chunks()

    def _read_chunks(self) -> Iterator[list[Any]]:
        read = getattr(self._handle, "read1", self._handle.read)
        carry = b""
        line = 1  # the line the next block starts on
        first = True
        while True:
            data = read(JSONL_CHUNK_BYTES)
            if first:
                data = data.removeprefix(_BOM)
                first = False
            if not data:
                if carry.strip():
                    yield self._decode_block(carry + b"\n", line)
                return
            block = carry + data if carry else data
            cut = block.rfind(b"\n") + 1
            if cut == 0:
                carry = block
                if len(carry) > MAX_LINE_BYTES:
                    raise InputError(
                        f"{self.name}: line {line} is longer than {MAX_LINE_BYTES} bytes; "
                        "is this a JSON Lines file (one lead per line)?"
                    )
                continue
            carry = block[cut:]
            leads = self._decode_block(block[:cut], line)
            line += block.count(b"\n", 0, cut)
            yield leads

    def _decode_block(self, block: bytes, line: int) -> list[Any]:
        """Decode whole lines; ``line`` is the first one's number."""
        count = block.count(b"\n")
        try:
            leads: list[Any] = _typed_decoder.decode_lines(block)
        except (msgspec.DecodeError, msgspec.ValidationError):
            leads = []
        if len(leads) == count:
            self.lines.note(self.rows, line)
        else:  # a blank line, or a line the typed decode refused: line by line
            leads = self._decode_each(block, line)
        strip_numbers(leads)
        if self._normalize is not None:
            self._normalize_numbers(leads, self._normalize)
        self.rows += len(leads)
        return leads

    def _decode_each(self, block: bytes, line: int) -> list[Any]:
        leads: list[Any] = []
        position = self.rows
        for number, text in enumerate(block.split(b"\n")[:-1], line):
            if not text.strip():
                self.blank_rows += 1
                continue
            self.lines.note(position, number)
            try:
                lead: Any = _typed_decoder.decode(text)
            except (msgspec.DecodeError, msgspec.ValidationError):
                # Not the wire form's shape: a plain decode lets the SDK name the field.
                try:
                    lead = _plain_decoder.decode(text)
                except msgspec.DecodeError as exc:
                    lead = self._reject(position, None, f"not valid JSON: {exc}")
            leads.append(lead)
            position += 1
        return leads


# -- opening -------------------------------------------------------------------------


def _sniff(handle: IO[bytes]) -> str:
    peek = getattr(handle, "peek", None)
    head = peek(64) if peek is not None else b""
    return "jsonl" if head.removeprefix(_BOM).lstrip()[:1] == b"{" else "csv"


def _skip_lines(handle: IO[bytes], count: int, name: str, underlying: list[IO[bytes]]) -> None:
    """Read ``count`` lines off ``handle`` (--skip-rows); close it all if there are fewer."""
    for skipped in range(count):
        if not handle.readline():
            for opened in (handle, *underlying):
                opened.close()
            raise InputError(f"{name}: --skip-rows {count}: it has only {skipped} lines")


def _check_text_options(encoding: str, errors: str, delimiter: str | None) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r} (--encoding)") from None
    if errors not in ENCODING_ERRORS:
        raise InputError(f"--encoding-errors {errors!r}: use strict or replace")
    if delimiter is not None and (len(delimiter) != 1 or delimiter in '"\r\n'):
        raise InputError(
            f"delimiter {delimiter!r} (--delimiter): must be one character, not a quote "
            "or a line break"
        )


def open_source(
    path: str,
    *,
    fmt: str | None = None,
    encoding: str = "utf-8",
    delimiter: str | None = None,
    number_column: str = "number",
    agents_column: str = "agentsAssigned",
    normalize: Callable[[object], str] | None = None,
    skip_rows: int = 0,
    columns: list[str] | None = None,
    exclude_columns: list[str] | None = None,
    encoding_errors: str = "strict",
) -> LeadSource:
    """Open a lead file (``"-"`` for stdin) and read what comes before the first lead.

    Blocking (it reads the CSV header): call it off the event loop for stdin.

    Args:
        path: the file, or ``"-"`` for standard input.
        fmt: ``"csv"`` or ``"jsonl"``; None guesses from the extension (stdin: from the
            first character, ``{`` for JSON Lines).
        encoding: the CSV's text encoding (JSON Lines is UTF-8).
        delimiter: the CSV's delimiter; None: a tab for ``.tsv``, else a comma.
        number_column: the CSV column of phone numbers (case-insensitive).
        agents_column: the CSV column of agent usernames (``;`` or ``|`` between them).
        normalize: applied to each number (see `ryng_async._phone.normalizer`).
        skip_rows: lines to skip before the header (a CSV) or the first lead (title
            lines); line numbers still count them.
        columns: the CSV's custom-field columns to send (default: all).
        exclude_columns: the CSV's custom-field columns not to send.
        encoding_errors: ``"strict"`` (a byte the encoding refuses stops the read,
            naming its line) or ``"replace"`` (it becomes U+FFFD, the row is kept).

    Raises:
        InputError: the file cannot be opened, its format is unknown, its encoding is
            unknown, its delimiter is not one character, or its CSV header is empty,
            lacks the number column or lacks a column ``columns`` names.
    """
    if fmt is None and path != "-":
        fmt = guess_format(path)
        if fmt is None:
            raise InputError(
                f"{path}: cannot tell the format from the extension; pass --format csv "
                "or --format jsonl"
            )
    _check_text_options(encoding, encoding_errors, delimiter)
    handle: IO[bytes]
    total: int | None = None
    underlying: list[IO[bytes]] = []
    if path == "-":
        name = "<stdin>"
        # Our own buffer on fd 0, not sys.stdin's: a read left blocked in a daemon thread
        # must not hold the lock the interpreter takes to close sys.stdin at exit.
        handle = io.BufferedReader(
            io.FileIO(sys.stdin.fileno(), "rb", closefd=False), buffer_size=_READ_BUFFER
        )
    else:
        name = path
        try:
            handle = open(path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed by LeadSource
            info = os.fstat(handle.fileno())
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from None
        if path.lower().endswith(".gz"):
            import gzip

            underlying.append(handle)
            handle = gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[assignment]
        elif stat.S_ISREG(info.st_mode):
            total = info.st_size  # of a .gz, the bytes read would be uncompressed ones
    _skip_lines(handle, skip_rows, name, underlying)
    fmt = fmt or _sniff(handle)
    source: LeadSource
    try:
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}: use csv or jsonl")  # noqa: TRY301
        if fmt == "csv":
            source = _CsvSource(name, fmt, handle, total)
            source.also_close = underlying
            source.skipped_lines = skip_rows
            source.prepare(
                encoding=encoding,
                encoding_errors=encoding_errors,
                delimiter=delimiter
                if delimiter is not None
                else ("\t" if path.lower().endswith(".tsv") else ","),
                normalize=normalize,
                number_column=number_column,
                agents_column=agents_column,
                columns=columns,
                exclude_columns=exclude_columns,
            )
        else:
            source = _JsonLinesSource(name, fmt, handle, total)
            source.also_close = underlying
            source.skipped_lines = skip_rows
            source.prepare(normalize=normalize)
    except BaseException:
        for opened in (handle, *underlying):
            opened.close()
        raise
    source.is_stdin = path == "-"
    return source


def aiter_leads(source: LeadSource) -> AsyncIterator[Any]:
    """Yield the source's leads one by one, parsing each chunk in a daemon thread."""
    return aiter(lead_chunks(source))


def number_normalizer(region: str | None) -> Callable[[object], str] | None:
    """``--default-region``'s normalizer (`ryng_async._phone.normalizer`), or None.

    Raises:
        ConfigurationError: phonenumbers is not installed, or the region is unknown.
    """
    if not region:
        return None
    from .._phone import normalizer

    return normalizer(region)


def source_from_args(
    args: argparse.Namespace, normalize: Callable[[object], str] | None = None
) -> LeadSource:
    """`open_source` of ``args.file`` with the reading options a command was given."""
    return open_source(
        args.file,
        fmt=args.format,
        encoding=args.encoding,
        delimiter=args.delimiter,
        number_column=args.number_column,
        agents_column=args.agents_column,
        normalize=normalize,
        skip_rows=getattr(args, "skip_rows", 0),
        columns=getattr(args, "columns", None),
        exclude_columns=getattr(args, "exclude_columns", None),
        encoding_errors=getattr(args, "encoding_errors", "strict"),
    )
