"""The ``campaign-sheet`` part of `RyngClient.upload_sheet`: a path, bytes or a file object."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import aiohttp

from ._exceptions import ValidationError

__all__ = ["SheetForm", "SheetInput"]

_SHEET_CHUNK = 64 * 1024

SheetInput = str | os.PathLike[str] | bytes | IO[bytes]
"""A CSV sheet: a file path, its bytes, or a binary file object."""


class SheetForm:
    """Makes the multipart form of a sheet upload, once per attempt.

    Attributes:
        retryable: a later attempt can send the sheet again (a path, bytes, or a
            seekable file object).
    """

    def __init__(self, sheet: SheetInput, agents: str | None) -> None:
        self._make_content, self._filename, self.retryable = _sheet_source(sheet)
        self._agents = agents
        self._opened: list[io.IOBase] = []

    def __call__(self) -> aiohttp.FormData:
        """Return a new form for one attempt."""
        form = aiohttp.FormData()
        content = self._make_content()
        if isinstance(content, io.IOBase):
            self._opened.append(content)  # a file we opened from the path: ours to close
        form.add_field("campaign-sheet", content, filename=self._filename, content_type="text/csv")
        if self._agents is not None:
            form.add_field("agents", self._agents)
        return form

    def close(self) -> None:
        """Close the files this form opened."""
        for handle in self._opened:
            handle.close()
        self._opened.clear()


def _sheet_source(sheet: SheetInput) -> tuple[Callable[[], Any], str, bool]:
    """Return (a maker of the part's content for each attempt, its filename, retryable)."""
    if isinstance(sheet, bytes | bytearray | memoryview):
        content = bytes(sheet)
        return (lambda: content), "campaign-sheet.csv", True
    if isinstance(sheet, str | os.PathLike):
        path = Path(sheet)
        if not path.is_file():
            problem = "is not a file" if path.exists() else "no such file"
            raise ValidationError(f"{problem}: {str(path)!r}", field="campaign-sheet")

        def reopen() -> IO[bytes]:
            try:
                return path.open("rb")  # streamed by aiohttp, which closes it
            except OSError as exc:
                raise ValidationError(
                    f"cannot read {str(path)!r}: {exc.strerror or exc}", field="campaign-sheet"
                ) from exc

        return reopen, path.name, True
    if hasattr(sheet, "read"):
        if not isinstance(sheet.read(0), bytes):  # read(0) consumes nothing
            raise ValidationError(
                "the file object must be opened in binary mode ('rb')", field="campaign-sheet"
            )
        seekable = bool(getattr(sheet, "seekable", lambda: False)())
        start = sheet.tell() if seekable else 0
        filename = Path(str(getattr(sheet, "name", "campaign-sheet.csv"))).name

        def chunks() -> AsyncIterator[bytes]:
            # Our own reader, not the file object itself: aiohttp would close the
            # caller's file after sending it, and a retry could not rewind it.
            if seekable:
                sheet.seek(start)
            return _read_chunks(sheet)

        return chunks, filename, seekable
    raise ValidationError(
        f"must be a path, bytes or a binary file object, got {type(sheet).__name__}",
        field="campaign-sheet",
    )


async def _read_chunks(handle: IO[bytes]) -> AsyncIterator[bytes]:
    while chunk := handle.read(_SHEET_CHUNK):
        yield chunk
