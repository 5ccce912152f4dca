"""Pure tests of `Packer` and `BodyTemplate`: the deterministic split by count and bytes."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ryng_async._batching import Batch, BodyTemplate, Packer
from ryng_async._report import InvalidLead
from ryng_async._validate import build_request

TEMPLATES = {
    "bare": build_request(),
    "full": build_request(
        name="Campagne d'été ☀",
        agent_mapping="global",
        agents=["a@x.com", "b@x.com"],
        custom_field_names={"customField1Name": "Id", "customField2Name": "Nom"},
        terminal_callback_url="https://hooks.example.com/terminal",
        connect_callback_url="https://hooks.example.com/connect",
    ),
}

# Any text msgspec can encode (no lone surrogates); control characters and non-ASCII
# make the encoded size differ from the character count.
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


@st.composite
def lead_rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {"number": draw(numbers)}
    if draw(st.booleans()):
        row["agentsAssigned"] = draw(st.lists(st.text(min_size=1, max_size=8), max_size=3))
    for n in draw(st.lists(st.integers(1, 12), max_size=4, unique=True)):
        row[f"customField{n}"] = draw(texts)
    # Now and then a big lead, so some leads fit nowhere.
    if draw(st.integers(0, 9)) == 0:
        row["customField99"] = "x" * draw(st.integers(100, 600))
    return row


@st.composite
def packings(draw: st.DrawFn) -> tuple[BodyTemplate, list[dict[str, Any]], list[int], int, int]:
    template = BodyTemplate(TEMPLATES[draw(st.sampled_from(sorted(TEMPLATES)))])
    rows = draw(st.lists(lead_rows(), max_size=40))
    gaps = draw(st.lists(st.integers(0, 3), min_size=len(rows), max_size=len(rows)))
    positions: list[int] = []
    position = draw(st.integers(0, 5))
    for gap in gaps:  # increasing, with gaps where invalid leads were dropped upstream
        position += gap
        positions.append(position)
        position += 1
    batch_size = draw(st.integers(1, 12))
    max_bytes = template.overhead + 2 + draw(st.integers(0, 700))
    return template, rows, positions, batch_size, max_bytes


def chunked(items: list[Any], cuts: list[int]) -> list[list[Any]]:
    """Split ``items`` at the sorted ``cuts``."""
    bounds = [0, *sorted(c % (len(items) + 1) for c in cuts), len(items)]
    return [items[a:b] for a, b in pairwise(bounds)]


def pack(
    template: BodyTemplate,
    rows: list[dict[str, Any]],
    positions: list[int],
    batch_size: int,
    max_bytes: int,
    cuts: list[int] | None = None,
) -> tuple[list[Batch], list[InvalidLead]]:
    packer = Packer(template, batch_size, max_bytes)
    batches: list[Batch] = []
    for row_chunk, position_chunk in zip(
        chunked(rows, cuts or []), chunked(positions, cuts or []), strict=True
    ):
        batches.extend(packer.add(row_chunk, position_chunk))
        assert packer.pending < batch_size  # add() returns every batch that is full
    batches.extend(packer.finish())
    assert packer.pending == 0
    return batches, packer.invalid


def body_of(batch: Batch) -> dict[str, Any]:
    decoded = msgspec.json.decode(bytes(batch.body))
    assert isinstance(decoded, dict)
    return decoded


@settings(max_examples=300, deadline=None, derandomize=True)
@given(packings(), st.lists(st.integers(0, 1000), max_size=6))
def test_packer_properties(
    packing: tuple[BodyTemplate, list[dict[str, Any]], list[int], int, int], cuts: list[int]
) -> None:
    template, rows, positions, batch_size, max_bytes = packing
    batches, invalid = pack(template, rows, positions, batch_size, max_bytes)

    # Indexes count up from 0; each batch's start is its first lead's position.
    assert [b.index for b in batches] == list(range(len(batches)))
    for batch in batches:
        assert 1 <= batch.count <= batch_size
        assert batch.count == len(batch.rows) == len(batch.positions)
        assert batch.start == batch.positions[0]
        assert len(batch.body) <= max_bytes
        decoded = body_of(batch)
        assert decoded["customerData"]["jsonData"] == batch.rows
        assert bytes(batch.body) == bytes(template.body(batch.rows))

    # Batches and invalid leads together are the input, in order, nothing lost or doubled.
    by_position = dict(zip(positions, rows, strict=True))
    placed = [(p, r) for b in batches for p, r in zip(b.positions, b.rows, strict=True)]
    assert [p for p, _ in placed] == sorted(p for p, _ in placed)  # input order kept
    assert all(by_position[p] is r for p, r in placed)
    invalid_positions = [lead.position for lead in invalid]
    assert sorted([p for p, _ in placed] + invalid_positions) == positions
    assert invalid_positions == sorted(invalid_positions)

    # A lead is invalid only when it cannot fit in a request on its own.
    for lead in invalid:
        assert len(template.body([by_position[lead.position]])) > max_bytes
        assert lead.field is None
        assert f"max_batch_bytes={max_bytes}" in lead.reason
    for _, row in placed:
        assert len(template.body([row])) <= max_bytes

    # Greedy: a batch ends at batch_size, at the end of the input, or because the next
    # lead would have made its body too large.
    index_of = {p: i for i, p in enumerate(positions)}
    for batch in batches:
        following = index_of[batch.positions[-1]] + 1
        if batch.count == batch_size or following == len(rows):
            continue
        assert len(template.body([*batch.rows, rows[following]])) > max_bytes

    # Deterministic: any chunking of the same rows gives the same batches.
    again, invalid_again = pack(template, rows, positions, batch_size, max_bytes, cuts)
    assert invalid_again == invalid
    assert [(b.index, b.start, b.positions, b.rows, bytes(b.body)) for b in again] == [
        (b.index, b.start, b.positions, b.rows, bytes(b.body)) for b in batches
    ]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_body_template_splices_leads_into_the_request(name: str) -> None:
    request = TEMPLATES[name]
    template = BodyTemplate(request)
    rows = [{"number": "+919876543210", "customField1": 'Max \u00e9\n"q"'}, {"number": "+15551234"}]
    body = template.body(rows)
    assert isinstance(body, bytearray)
    # Byte for byte what encoding the whole request gives.
    whole = msgspec.structs.replace(
        request, customer_data=msgspec.structs.replace(request.customer_data, json_data=rows)
    )
    assert bytes(body) == msgspec.json.encode(whole)
    assert len(template.body([])) == template.overhead + 2  # "[]"
    assert template.overhead == len(template.prefix) + len(template.suffix)


def test_packer_cuts_by_count_and_waits_for_more() -> None:
    template = BodyTemplate(build_request())
    packer = Packer(template, 3, 1 << 20)
    rows = [{"number": f"+1555000{i:04d}"} for i in range(7)]
    assert packer.add(rows[:2], [0, 1]) == []
    assert packer.pending == 2
    full = packer.add(rows[2:7], [2, 3, 5, 6, 9])
    assert [(b.index, b.start, b.positions) for b in full] == [(0, 0, [0, 1, 2]), (1, 3, [3, 5, 6])]
    rest = packer.finish()
    assert [(b.index, b.start, b.positions, b.rows) for b in rest] == [(2, 9, [9], [rows[6]])]
    assert packer.finish() == []
    assert packer.invalid == []


def test_packer_cuts_by_bytes_and_refuses_a_lead_too_big_alone() -> None:
    template = BodyTemplate(build_request())
    small = {"number": "+15550000001"}
    one = len(template.body([small]))
    limit = one + len(msgspec.json.encode(small)) + 1  # two fit, with their comma
    packer = Packer(template, 100, limit)
    big = {"number": "+15550000002", "customField1": "x" * 1000}
    rows = [small, small, small, big, small]
    batches = packer.add(rows, list(range(5))) + packer.finish()
    assert [b.positions for b in batches] == [[0, 1], [2], [4]]
    assert [lead.position for lead in packer.invalid] == [3]
    assert "max_batch_bytes" in packer.invalid[0].reason
    assert all(len(b.body) <= limit for b in batches)


def test_exact_fit_is_allowed() -> None:
    template = BodyTemplate(build_request())
    rows = [{"number": "+15550000001"}, {"number": "+15550000002"}]
    exact = len(template.body(rows))
    packer = Packer(template, 10, exact)
    (batch,) = packer.add(rows, [0, 1]) + packer.finish()
    assert batch.rows == rows
    assert len(batch.body) == exact
    packer = Packer(template, 10, exact - 1)
    assert [b.count for b in packer.add(rows, [0, 1]) + packer.finish()] == [1, 1]
