"""The compiled proof of a chunk of leads (``ryng_async._speedups``) against its twin.

Every test that asks `leads_are_valid` (test_models, test_fake_server_oracle) asks both
through ``_lead_proofs``; here are the cases only the compiled one has: its table of the
key objects it has seen, strings that are not plain ``str``, lone surrogates, and the
switch back to the pure-Python passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from _lead_proofs import (
    compiled_lead_columns,
    compiled_leads_are_valid,
    holds_lone_surrogate,
    lead_columns,
    leads_are_valid,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ryng_async import Lead, _lead_checks
from ryng_async._lead_checks import proven_rows, python_lead_columns, python_leads_are_valid

NUMBER = "+919876543210"

requires_compiled = pytest.mark.skipif(
    compiled_leads_are_valid is None, reason="ryng_async._speedups is not built here"
)


def test_the_compiled_check_is_in_use_where_it_is_built() -> None:
    if os.environ.get("RYNG_TEST_REQUIRE_SPEEDUPS"):  # .ci/run: it must have been built
        assert compiled_leads_are_valid is not None
    if compiled_leads_are_valid is None or os.environ.get("RYNG_ASYNC_NO_EXTENSIONS"):
        assert _lead_checks.leads_are_valid is python_leads_are_valid
        assert _lead_checks.lead_columns is python_lead_columns
        assert not _lead_checks.ACCELERATED
    else:
        assert _lead_checks.leads_are_valid is compiled_leads_are_valid
        assert _lead_checks.lead_columns is compiled_lead_columns
        assert _lead_checks.ACCELERATED


def test_the_environment_switches_back_to_the_pure_python_passes() -> None:
    script = (
        "from ryng_async import ValidationError\n"
        "from ryng_async import _lead_checks as c\n"
        "assert not c.ACCELERATED and c.leads_are_valid is c.python_leads_are_valid\n"
        "assert c.lead_columns is c.python_lead_columns\n"
        "from ryng_async._compiled import SPEEDUPS\n"
        "assert SPEEDUPS is None\n"
        "from ryng_async.cli._lead_rows import leads_maker\n"
        "made = leads_maker(('number', 'customField1'), (1, 0))([['x', ' +919876543210 ']])\n"
        "assert made == [{'number': '+919876543210', 'customField1': 'x'}], made\n"
        "rows = [{'number': '+919876543210', 'customField1': 'x'}]\n"
        "assert c.validate_leads(rows) == rows\n"
        "try:\n"
        "    c.validate_leads([*rows, {'number': '+0919876543210'}])\n"
        "except ValidationError as exc:\n"
        "    print(exc.field, exc.position)\n"
    )
    env = {**os.environ, "RYNG_ASYNC_NO_EXTENSIONS": "1"}
    done = subprocess.run(  # noqa: S603 - this interpreter, a script of the test's own
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["number", "1"]


@requires_compiled
def test_more_distinct_keys_than_it_remembers_are_each_checked() -> None:
    # It remembers 32 key objects a call; past them every key is read by name.
    wide = {"number": NUMBER, **{f"customField{n}": "x" for n in range(1, 60)}}
    assert leads_are_valid([wide, dict(wide)])
    assert not leads_are_valid([wide, {**wide, "customField060": "x"}])
    assert not leads_are_valid([wide, {**wide, "customfield61": "x"}])


@requires_compiled
def test_a_bad_row_deep_in_a_chunk_of_shared_keys_is_found() -> None:
    rows = [{"number": NUMBER, "customField1": "x"} for _ in range(1_000)]
    assert leads_are_valid(rows)
    for bad in (
        {"number": NUMBER, "customField0": "x"},
        {"number": NUMBER, "customField1": 1},
        {"number": NUMBER[:-7]},
        {"customField1": "x"},
        {"number": NUMBER, "agentsAssigned": []},
    ):
        assert not leads_are_valid([*rows[:900], bad, *rows[900:]]), bad


class Text(str):
    __slots__ = ()


@requires_compiled
def test_str_subclasses_are_taken_as_the_pure_python_passes_take_them() -> None:
    # Values and keys: a str subclass, as str.join takes one; agents: exactly str.
    assert leads_are_valid([{Text("number"): Text(NUMBER), Text("customField2"): Text("x")}])
    assert not leads_are_valid([{"number": NUMBER, "agentsAssigned": [Text("a")]}])
    assert not leads_are_valid([{"number": NUMBER, "agentsAssigned": ("a",)}])


@requires_compiled
@pytest.mark.parametrize(
    "row",
    [
        {"number": NUMBER, "customField1": "bad \ud800 text"},
        {"number": NUMBER, "customField1": "astral \U0001f600 and \udfff"},
        {"number": NUMBER, "agentsAssigned": ["agent\udfff"]},
    ],
)
def test_a_lone_surrogate_is_not_proven(row: dict[str, Any]) -> None:
    # The pure-Python passes leave it to the encoder; the compiled check refuses it itself.
    assert python_leads_are_valid([row])
    assert compiled_leads_are_valid is not None
    assert not compiled_leads_are_valid([row])
    assert leads_are_valid([row])  # the two agree but for this


@requires_compiled
def test_only_a_list_of_rows_is_proven() -> None:
    assert compiled_leads_are_valid is not None
    assert compiled_leads_are_valid([])
    assert not compiled_leads_are_valid(({"number": NUMBER},))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        compiled_leads_are_valid()  # type: ignore[call-arg]


# Text of every kind, lone surrogates included; keys often valid, sometimes near misses.
TEXT = st.text(alphabet=st.characters(codec=None), max_size=8)
KEYS = st.one_of(
    st.sampled_from(["number", "agentsAssigned", "customField1", "customField10"]),
    st.integers(1, 200).map(lambda n: f"customField{n}"),
    st.sampled_from(["customField0", "customField01", "customField", "Number", "", "agents"]),
    TEXT,
    st.integers(-1, 2),
)
NUMBERS = st.one_of(
    st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
    st.from_regex(r"\+?[0-9]{5,17}", fullmatch=True),
    TEXT,
    st.integers(),
)
VALUES = st.one_of(
    TEXT,
    TEXT.map(Text),
    st.none(),
    st.integers(),
    st.lists(TEXT, max_size=3),
    st.lists(TEXT, min_size=1, max_size=3).map(tuple),
)


@st.composite
def rows(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.one_of(st.none(), TEXT, st.lists(TEXT)))
    row: dict[Any, Any] = {}
    if draw(st.integers(0, 10)) > 0:
        row["number"] = draw(NUMBERS)
    for key, value in draw(st.lists(st.tuples(KEYS, VALUES), max_size=5)):
        row[key] = value
    return row


@settings(derandomize=True, database=None, max_examples=600, deadline=None)
@given(st.lists(rows(), max_size=8))
def test_both_proofs_agree_on_any_rows(chunk: list[Any]) -> None:
    leads_are_valid(chunk)  # asserts that they agree (the compiled one stricter on surrogates)


# -- Lead objects, a column at a time -------------------------------------------------


def test_leads_keyed_in_another_order_are_read_by_index() -> None:
    rows = [
        Lead(number=NUMBER, agents_assigned=("a",), custom_fields={2: "x", 1: "y"}),
        Lead(number=NUMBER, agents_assigned=["b", "c"], custom_fields={1: "z", 2: "w"}),
    ]
    assert lead_columns(rows) == (
        (2, 1),
        True,
        [[NUMBER, NUMBER], [["a"], ["b", "c"]], ["x", "w"], ["y", "z"]],
    )


@pytest.mark.parametrize(
    "second",
    [
        Lead(number=NUMBER, custom_fields={True: "b"}),  # True == 1: "customFieldTrue"
        Lead(number=NUMBER, custom_fields={1.0: "b"}),  # type: ignore[dict-item]
        Lead(number=NUMBER, custom_fields={2: "b"}),
        Lead(number=NUMBER, custom_fields={1: "b", 2: "c"}),
        Lead(number=NUMBER, custom_fields={1: 7}),  # type: ignore[dict-item]
        Lead(number=NUMBER, custom_fields=[("1", "b")]),  # type: ignore[arg-type]
        Lead(number=NUMBER[:-7], custom_fields={1: "b"}),
        Lead(number=NUMBER, agents_assigned=("a",), custom_fields={1: "b"}),
    ],
    ids=repr,
)
def test_a_lead_unlike_the_first_is_not_proven(second: Lead) -> None:
    first = Lead(number=NUMBER, custom_fields={1: "a"})
    assert lead_columns([first, first]) is not None
    assert lead_columns([first, second]) is None
    assert lead_columns([first, first, second, first]) is None


def test_a_lead_keyed_by_true_is_refused_not_sent_as_custom_field_1() -> None:
    # The pure-Python column check looked at the first lead's keys only, and a lead keyed
    # by True (== 1) went out as customField1 where validate_lead refuses it.
    rows = [
        Lead(number=NUMBER, custom_fields={1: "a"}),
        Lead(number=NUMBER, custom_fields={True: "b"}),
    ]
    assert proven_rows(rows) is None


@requires_compiled
def test_the_column_check_keeps_no_reference_it_should_not() -> None:
    # A lead keyed out of order is read in one walk, then again index by index: the cells
    # the walk filled must not leak their values.
    value = "".join(["a value ", "of its own"])
    before = sys.getrefcount(value)
    rows = [
        Lead(number=NUMBER, custom_fields={1: value, 2: value}),
        Lead(number=NUMBER, custom_fields={1: value, 3: value, 2: value}),
        Lead(number=NUMBER, custom_fields={1: value, 2: value, 5: value}),
    ]
    held = sys.getrefcount(value)
    for _ in range(100):
        assert compiled_lead_columns is not None
        assert compiled_lead_columns(rows[:1] + rows[2:], Lead) is None
        assert compiled_lead_columns(
            [rows[0], Lead(number=NUMBER, custom_fields={2: value, 1: value})], Lead
        )
    assert sys.getrefcount(value) == held
    del rows
    assert sys.getrefcount(value) == before


class OtherLead(Lead, frozen=True, kw_only=True):
    pass


def test_only_leads_of_the_class_are_proven() -> None:
    assert lead_columns([OtherLead(number=NUMBER)]) is None
    assert lead_columns([Lead(number=NUMBER), {"number": NUMBER}]) is None
    if compiled_lead_columns is not None:
        assert compiled_lead_columns([], Lead) is None
        assert compiled_lead_columns([Lead(number=NUMBER)], dict) is None


LEADS = st.builds(
    Lead,
    number=NUMBERS,
    agents_assigned=st.none()
    | st.lists(TEXT, max_size=3)
    | st.lists(TEXT, max_size=3).map(tuple)
    | TEXT
    | st.lists(TEXT.map(Text), min_size=1, max_size=2),
    custom_fields=st.dictionaries(
        st.integers(-1, 4) | st.booleans() | st.just(1.0), VALUES, max_size=3
    )
    | st.lists(TEXT, max_size=2),
)


@settings(derandomize=True, database=None, max_examples=600, deadline=None)
@given(st.lists(LEADS, min_size=1, max_size=6))
def test_both_column_checks_agree_on_any_leads(chunk: list[Lead]) -> None:
    lead_columns(chunk)  # asserts that they agree (the compiled one stricter on surrogates)


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(
    st.lists(
        st.builds(
            Lead,
            number=st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
            custom_fields=st.fixed_dictionaries({1: TEXT, 2: TEXT}),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_both_column_checks_prove_valid_leads(chunk: list[Lead]) -> None:
    assert lead_columns(chunk) is not None  # the pure-Python twin leaves surrogates be
    surrogate = holds_lone_surrogate([lead.custom_fields for lead in chunk])
    if compiled_lead_columns is not None:
        assert (compiled_lead_columns(chunk, Lead) is None) == surrogate
