from typing import Any

__all__ = ["lead_columns", "leads_are_valid"]

def leads_are_valid(rows: list[Any], /) -> bool: ...
def lead_columns(
    rows: list[Any], lead_type: type, /
) -> tuple[tuple[int, ...], bool, list[list[Any]]] | None: ...
