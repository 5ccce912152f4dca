"""The fake server's lead rules against the SDK's validation: two oracles that must agree.

`FakeRyngServer` checks leads with its own rules, written from the vendor's reference, so
that a bug in the SDK's validation cannot pass on both sides. These properties generate
leads, valid and mutated the ways real data goes wrong, put them through the wire (JSON
bytes, as the server receives them) and require both sides to give the same verdict,
and for a lead with one fault, to blame the same field.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from _lead_proofs import leads_are_valid
from conftest import FAST_RETRY, TOKEN
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import ryng_async._vendor_rules
import ryng_async.testing
from ryng_async import RyngClient, ValidationError
from ryng_async._lead_checks import validate_lead
from ryng_async._vendor_rules import first_bad_lead, leads_pass
from ryng_async.testing import FakeRyngServer

NUMBER = "+919876543210"

VALID_NUMBERS = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
# Past 100, the server's custom field names go through its regex, not its set of common ones.
CUSTOM_KEYS = (st.integers(1, 100) | st.integers(101, 10**9)).map(lambda n: f"customField{n}")
USERNAMES = st.text(min_size=1, max_size=12)

BAD_NUMBERS = [
    "",
    "+",
    "12345",
    "919876543210",  # no '+'
    "++919876543210",
    "+0919876543210",  # first digit 0
    "+123456",  # 6 digits
    "+1234567890123456",  # 16 digits
    "+91 98765 43210",
    "+91-9876543210",
    "+919876543210 ",
    " +919876543210",
    "+919876543210\n",
    "\n+919876543210",
    "+919876543210\n+14155550123",
    "+91987654321\uff10",  # fullwidth zero
    "+" + "".join(chr(0x660 + int(d)) for d in "919876543210"),  # Arabic-Indic digits
    "+" + "".join(chr(0x966 + int(d)) for d in "919876543210"),  # Devanagari digits
    "+91" + "".join(chr(0x660 + int(d)) for d in "9876543210"),  # ASCII, then Arabic-Indic
    "+9198765432\u00b9",  # superscript one: str.isdigit() says yes
    "+919876543210\x00",
]
# Each must be refused, and each is a value JSON can carry.
BAD_NUMBER_VALUES = st.one_of(
    st.sampled_from(BAD_NUMBERS),
    st.text(alphabet="+0123456789\n \t-\u0660\u0661\u0967\uff10\u00b9", max_size=18),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.just([NUMBER]),
    st.just({"number": NUMBER}),
)
BAD_KEY_NAMES = [
    "customField0",
    "customField00",
    "customField01",
    "customField",
    "customField-1",
    "customField+1",
    "customField1 ",
    " customField1",
    "customField1\n",
    "customField\u0661",  # Arabic-Indic one
    "customField\u0967",  # Devanagari one
    "customField\u00b9",
    "customfield1",
    "CustomField1",
    "customField1Name",
    "customFields",
    "Number",
    "number ",
    "agents",
    "agentsassigned",
    "agentMapping",
    "name",
    "",
]
BAD_KEYS = st.sampled_from(BAD_KEY_NAMES) | st.text(max_size=15)
BAD_AGENT_LISTS: list[object] = [
    [],
    [""],
    ["alice@example.com", ""],
    "alice@example.com",  # a string, not an array of them
    [None],
    [7],
    None,
    {},
]
NOT_ARRAYS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)
NON_STRINGS = NOT_ARRAYS | st.lists(st.text(max_size=3), max_size=2)
BAD_AGENTS = st.one_of(
    st.sampled_from(BAD_AGENT_LISTS),
    st.lists(NON_STRINGS, min_size=1, max_size=3),
    st.lists(USERNAMES, max_size=2).flatmap(
        lambda names: NON_STRINGS.map(lambda odd: [*names, odd])
    ),
    NOT_ARRAYS,
)

Mutation = Callable[[st.DrawFn, dict[str, Any]], None]


def _bad_number(draw: st.DrawFn, lead: dict[str, Any]) -> None:
    lead["number"] = draw(BAD_NUMBER_VALUES)


def _no_number(draw: st.DrawFn, lead: dict[str, Any]) -> None:
    lead.pop("number", None)


def _unknown_key(draw: st.DrawFn, lead: dict[str, Any]) -> None:
    lead[draw(BAD_KEYS)] = draw(st.text(max_size=5) | NON_STRINGS)


def _custom_field_not_a_string(draw: st.DrawFn, lead: dict[str, Any]) -> None:
    lead[draw(CUSTOM_KEYS)] = draw(NON_STRINGS)


def _bad_agents(draw: st.DrawFn, lead: dict[str, Any]) -> None:
    lead["agentsAssigned"] = draw(BAD_AGENTS)


MUTATIONS: list[Mutation] = [
    _bad_number,
    _no_number,
    _unknown_key,
    _custom_field_not_a_string,
    _bad_agents,
]


@st.composite
def valid_leads(draw: st.DrawFn) -> dict[str, Any]:
    """A lead both sides must accept, its keys in a drawn order."""
    lead: dict[str, Any] = {"number": draw(VALID_NUMBERS)}
    if draw(st.booleans()):
        lead["agentsAssigned"] = draw(st.lists(USERNAMES, min_size=1, max_size=3))
    for key in draw(st.lists(CUSTOM_KEYS, max_size=4, unique=True)):
        lead[key] = draw(st.text(max_size=10))
    order = draw(st.permutations(list(lead)))
    return {key: lead[key] for key in order}


@st.composite
def leads_with_faults(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A lead as the server would decode it, and how many faults were put in it."""
    lead = draw(valid_leads())
    faults = draw(st.sampled_from([0, 0, 1, 1, 1, 2]))
    for _ in range(faults):
        draw(st.sampled_from(MUTATIONS))(draw, lead)
    # Through JSON bytes, as the server receives it.
    wire: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(lead))
    return wire, faults


def leads() -> st.SearchStrategy[dict[str, Any]]:
    return leads_with_faults().map(lambda pair: pair[0])


@st.composite
def bodies(draw: st.DrawFn) -> list[dict[str, Any]]:
    """The leads of a body: valid ones, with now and then one faulty lead among them."""
    rows = draw(st.lists(valid_leads(), max_size=8))
    if draw(st.booleans()):
        rows.insert(draw(st.integers(0, len(rows))), draw(leads()))
    wire: list[dict[str, Any]] = msgspec.json.decode(msgspec.json.encode(rows))
    return wire


def sdk_verdict(lead: dict[str, Any]) -> str | None:
    """The field the SDK's reference rules blame, "" for none named; None if accepted."""
    try:
        validate_lead(lead)
    except ValidationError as exc:
        return exc.field or ""
    return None


def server_verdict(lead: dict[str, Any]) -> str | None:
    """The field the fake server blames; None if it accepts the lead."""
    bad = first_bad_lead([lead])
    return None if bad is None else bad[1]


def kind(field: str) -> str:
    """The field, or which sort of key it is, for hypothesis's statistics."""
    if field in {"number", "agentsAssigned"}:
        return field
    return "a customField" if field.startswith("customField") else "a foreign key"


def sdk_first_bad(rows: list[dict[str, Any]]) -> int | None:
    for position, row in enumerate(rows):
        if sdk_verdict(row) is not None:
            return position
    return None


# -- independence ----------------------------------------------------------------------


def test_the_fake_server_does_not_import_the_sdks_validation() -> None:
    imported: list[str] = []
    for module in (ryng_async.testing, ryng_async._vendor_rules):  # the server, its rules
        tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
        imported.extend(_imports(tree))
    checks = ("_validate", "_lead_checks")
    assert [name for name in imported if any(check in name for check in checks)] == []


def _imports(tree: ast.Module) -> list[str]:
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
            imported.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.extend(alias.name for alias in node.names)
    return imported


# -- the known bad values, each on its own -------------------------------------------


@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_both_sides_refuse_each_known_bad_number(number: str) -> None:
    lead = {"number": number, "customField1": "Max"}
    assert server_verdict(lead) == sdk_verdict(lead) == "number"


@pytest.mark.parametrize("key", BAD_KEY_NAMES)
def test_both_sides_refuse_each_known_foreign_key(key: str) -> None:
    lead = {"number": NUMBER, key: "x"}
    assert server_verdict(lead) == sdk_verdict(lead) == key


@pytest.mark.parametrize("agents", BAD_AGENT_LISTS)
def test_both_sides_refuse_each_known_bad_agent_list(agents: object) -> None:
    lead = {"number": NUMBER, "agentsAssigned": agents}
    assert server_verdict(lead) == sdk_verdict(lead) == "agentsAssigned"


NOT_STRING_VALUES: list[object] = [None, 7, 1.5, True, ["x"], {}]
BAD_LEADS: list[dict[str, Any]] = [
    {"customField1": "Max"},
    *({"number": number} for number in BAD_NUMBERS),
    *({"number": NUMBER, key: "x"} for key in BAD_KEY_NAMES),
    *({"number": NUMBER, "agentsAssigned": agents} for agents in BAD_AGENT_LISTS),
    *({"number": NUMBER, "customField2": value} for value in NOT_STRING_VALUES),
]
GOOD_LEADS: list[dict[str, Any]] = [
    {"number": "+14155550123", "agentsAssigned": ["bob@example.com"], "customField2": "Ann"},
    {"number": "+919876543210"},
]


@pytest.mark.parametrize("bad", BAD_LEADS, ids=repr)
def test_one_bad_lead_among_good_ones_is_found_by_every_path(bad: dict[str, Any]) -> None:
    # Good leads with agents and custom fields around the bad one: the whole-chunk fast
    # paths must not let the others' valid values vouch for it.
    rows = [*GOOD_LEADS, bad, *GOOD_LEADS]
    found = first_bad_lead(rows)
    assert found is not None
    assert found[0] == 2
    assert sdk_first_bad(rows) == 2
    assert not leads_pass(rows)
    assert not leads_are_valid(rows)


# -- properties ------------------------------------------------------------------------


@settings(derandomize=True, database=None, max_examples=600, deadline=None)
@given(leads_with_faults())
@example(({"number": "+919876543210\n"}, 1))
@example(
    ({"number": "+\u0669\u0661\u0669\u0668\u0667\u0666\u0665\u0664\u0663\u0662\u0661\u0660"}, 1)
)
@example(({"number": NUMBER, "customField0": "x"}, 1))
@example(({"number": NUMBER, "customField01": "x"}, 1))
@example(({"number": NUMBER, "customField\u0661": "x"}, 1))
@example(({"number": NUMBER, "agentsAssigned": []}, 1))
@example(({"number": NUMBER, "agentsAssigned": [""]}, 1))
@example(({"number": NUMBER, "agentsAssigned": "bob@example.com"}, 1))
@example(({"number": NUMBER, "customField1": None}, 1))
@example(({"number": NUMBER, "customField1": 7}, 1))
@example(({"customField1": "Max"}, 1))
@example(({"number": 919876543210}, 1))
def test_both_sides_agree_on_every_lead(case: tuple[dict[str, Any], int]) -> None:
    lead, faults = case
    server = server_verdict(lead)
    sdk = sdk_verdict(lead)
    assert (server is None) == (sdk is None), (lead, server, sdk)
    event(f"{faults} fault(s): " + ("accepted" if server is None else f"refused: {kind(server)}"))
    if faults == 0:
        assert server is None, lead
    if faults == 1 and server is not None:
        assert server == sdk, lead  # one fault: both blame the same field
    # Both sides' whole-chunk fast paths give the same verdict on what JSON can carry.
    assert leads_pass([lead]) == (server is None), lead
    assert leads_are_valid([lead]) == (sdk is None), lead


@settings(derandomize=True, database=None, max_examples=150, deadline=None)
@given(bodies())
@example([{"number": NUMBER}, {"number": "+919876543210\n+14155550123"}])
@example([{"number": NUMBER, "agentsAssigned": ["a"]}, {"number": NUMBER, "customField1": 1}])
@example([{"number": NUMBER, "agentsAssigned": ["a"]}, {"number": NUMBER, "agentsAssigned": []}])
def test_both_sides_agree_on_the_first_bad_lead_of_a_body(rows: list[dict[str, Any]]) -> None:
    bad = first_bad_lead(rows)
    expected = sdk_first_bad(rows)
    assert (None if bad is None else bad[0]) == expected, rows
    assert leads_pass(rows) == (expected is None), rows
    assert leads_are_valid(rows) == (expected is None), rows


# -- through a real FakeRyngServer -----------------------------------------------------


async def post_raw(server: FakeRyngServer, rows: list[dict[str, Any]]) -> tuple[int, str]:
    """POST a body around the SDK, as a caller that skipped its validation would."""
    body = msgspec.json.encode({"customerData": {"jsonData": rows}})
    headers = {"x-access-token": TOKEN, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.url("42"), data=body, headers=headers) as response,
    ):
        return response.status, msgspec.json.decode(await response.read())["message"]


@pytest.mark.anyio
@settings(
    derandomize=True,
    database=None,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(leads(), min_size=1, max_size=6))
async def test_what_the_sdk_sends_the_server_accepts_and_what_it_refuses_the_server_refuses(
    rows: list[dict[str, Any]],
) -> None:
    expected = sdk_first_bad(rows)
    async with FakeRyngServer(access_token=TOKEN) as server:
        async with RyngClient(
            base_url=server.base_url, access_token=TOKEN, retry=FAST_RETRY
        ) as client:
            if expected is None:
                answer = await client.append("42", rows)
                assert answer.error is False
                assert server.leads == rows
            else:
                with pytest.raises(ValidationError) as refused:
                    await client.append("42", rows)
                assert refused.value.position == expected
                assert server.received_requests == 0
        if expected is not None:
            status, message = await post_raw(server, rows)
            assert status == 400, message
            assert message.startswith(f"Invalid customer data: lead #{expected}: "), message
            assert server.lead_count() == 0
