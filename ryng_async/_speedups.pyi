from typing import Any

__all__ = ["lead_columns", "leads_are_valid", "rows_to_dicts"]

def leads_are_valid(rows: list[Any], /) -> bool: ...
def lead_columns(
    rows: list[Any], lead_type: type, /
) -> tuple[tuple[int, ...], bool, list[list[Any]]] | None: ...
def rows_to_dicts(
    rows: list[list[str]], keys: tuple[str, ...], indices: tuple[int, ...], strip_at: int, /
) -> list[dict[str, Any]]: ...
