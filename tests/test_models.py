"""Tests for ryng_async._models and ryng_async._lead_checks: wire structs and lead validation."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import msgspec
import pytest
from _lead_proofs import leads_are_valid
from conftest import VENDOR_EXAMPLE_BODY
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ryng_async import AgentMapping, AppendResponse, Lead, ValidationError
from ryng_async._lead_checks import (
    proven_rows,
    validate_lead,
    validate_leads,
    wire_leads,
)
from ryng_async._models import (
    AppendRequest,
    CustomerData,
    WireLead,
    decode_request,
    decode_response,
    encode,
    wire_dict,
)
from ryng_async._validate import build_request

NUMBER = "+919876543210"


def in_script(text: str, zero: int) -> str:
    """``text`` with its ASCII digits written in another script (``zero``: its 0)."""
    return "".join(chr(zero + int(c)) if c.isdigit() else c for c in text)


DEVANAGARI, ARABIC_INDIC, FULLWIDTH = 0x0966, 0x0660, 0xFF10

# The vendor's "Example Body", verbatim except for "agentMapping", where the vendor lists
# the three choices ("global"/"inline"/"all-agents"): one is picked.


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


# -- the wire format -------------------------------------------------------------------


def test_vendor_example_decodes_and_reencodes_identically() -> None:
    request = decode_request(VENDOR_EXAMPLE_BODY)
    reencoded = encode(request)

    original = json.loads(VENDOR_EXAMPLE_BODY)
    assert json.loads(reencoded) == original
    assert reencoded == compact(original)


def test_vendor_example_decodes_to_typed_fields() -> None:
    request = decode_request(VENDOR_EXAMPLE_BODY)

    assert request.name == "Example Campaign"
    assert request.agent_mapping == "global"
    assert request.agents == ["ashwin@example.com", "alice@example.com"]
    assert request.custom_field_names == {
        "customField1Name": "Name",
        "customField2Name": "Brand",
        "customField3Name": "Product",
    }
    data = request.customer_data
    assert data.terminal_callback_url == "http://api.example.com/call-data"
    assert data.connect_callback_url == "http://api.example.com/connect-data"
    assert [lead["customField1"] for lead in data.json_data] == ["Max", "Alex", "Sophia", "Oliver"]


@pytest.mark.parametrize("mapping", ["global", "inline", "all-agents"])
def test_build_request_reproduces_the_vendor_envelope(mapping: str) -> None:
    original = json.loads(VENDOR_EXAMPLE_BODY)
    data = original["customerData"]

    request = build_request(
        name=original["name"],
        agent_mapping=mapping,
        agents=original["agents"],
        custom_field_names=original["customFieldNames"],
        terminal_callback_url=data["terminalCallbackUrl"],
        connect_callback_url=data["connectCallbackUrl"],
    )
    request.customer_data.json_data = validate_leads(data["jsonData"])

    assert encode(request) == compact({**original, "agentMapping": mapping})


def test_empty_options_are_omitted_from_the_body() -> None:
    request = build_request()
    request.customer_data.json_data = [{"number": NUMBER}]

    assert encode(request) == b'{"customerData":{"jsonData":[{"number":"+919876543210"}]}}'


def test_json_data_is_the_last_field() -> None:
    # The bulk engine splices leads in before the closing "]}}".
    assert AppendRequest.__struct_fields__[-1] == "customer_data"
    assert CustomerData.__struct_fields__[-1] == "json_data"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error": false, "message": "Processing Campaign...", "data": {}}',
            AppendResponse(error=False, message="Processing Campaign...", data={}),
        ),
        (
            b'{"error": true, "message": "Unauthorized Token"}',
            AppendResponse(error=True, message="Unauthorized Token", data={}),
        ),
        (
            b'{"error": true, "message": "Failed to create Campaign"}',
            AppendResponse(error=True, message="Failed to create Campaign"),
        ),
        (
            b'{"error": false, "message": "ok", "data": {"id": 7}, "extra": 1}',
            AppendResponse(error=False, message="ok", data={"id": 7}),
        ),
        (b'{"error": false}', AppendResponse(error=False, message="", data={})),
    ],
)
def test_append_response_decodes(body: bytes, expected: AppendResponse) -> None:
    assert decode_response(body) == expected


@pytest.mark.parametrize(
    "body",
    [b"", b"<html>", b"[]", b'{"message": "no flag"}', b'{"error": "false"}', b'{"error": 0}'],
)
def test_append_response_refuses_malformed_bodies(body: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        decode_response(body)


def test_agent_mapping_values_and_plain_strings() -> None:
    assert [m.value for m in AgentMapping] == ["global", "inline", "all-agents"]
    assert AgentMapping("all-agents") is AgentMapping.ALL_AGENTS
    assert AgentMapping.GLOBAL == "global"
    assert build_request(agent_mapping="inline").agent_mapping == "inline"
    assert build_request(agent_mapping=AgentMapping.ALL_AGENTS).agent_mapping == "all-agents"


# -- lead validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "+1234567",  # 7 digits
        "+123456789012345",  # 15 digits
        "+919876543210",
        "+14155550123",
        "+917994771185",
    ],
)
def test_valid_numbers(number: str) -> None:
    assert validate_lead({"number": number}) == {"number": number}
    assert leads_are_valid([{"number": number}])


BAD_NUMBERS = [
    "",
    "+",
    "919876543210",  # no +
    "+0919876543210",  # first digit 0
    "+123456",  # 6 digits
    "+1234567890123456",  # 16 digits
    "+९१९८७६५४३२१०",  # Devanagari digits, as a user may paste them
    in_script(NUMBER, DEVANAGARI),
    in_script(NUMBER, ARABIC_INDIC),
    in_script(NUMBER, FULLWIDTH),
    "+91" + in_script("9876543210", ARABIC_INDIC),
    "+919876543210\n",  # trailing newline
    "\n+919876543210",
    "+919876543210\n+919876543211",  # two numbers in one
    " +919876543210",
    "+919876543210 ",
    "+91 98765 43210",
    "+91-9876543210",
    "++919876543210",
    "+91987654321a",
    "+919876543210\x00",
]


@pytest.mark.parametrize("number", BAD_NUMBERS)
def test_bad_numbers_are_refused(number: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_lead({"number": number})
    assert info.value.field == "number"
    assert not leads_are_valid([{"number": number}])
    assert not leads_are_valid([{"number": NUMBER}, {"number": number}])


@pytest.mark.parametrize("number", [None, 919876543210, b"+919876543210", ["+919876543210"]])
def test_number_must_be_a_string(number: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_lead({"number": number})
    assert info.value.field == "number"
    assert not leads_are_valid([{"number": number}])


def test_number_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        validate_lead({"customField1": "Max"})
    assert info.value.field == "number"
    assert not leads_are_valid([{"customField1": "Max"}])


@pytest.mark.parametrize("key", ["customField1", "customField2", "customField10", "customField999"])
def test_custom_field_keys_accepted(key: str) -> None:
    row = {"number": NUMBER, key: "value"}
    assert validate_lead(row) == row
    assert leads_are_valid([row])


@pytest.mark.parametrize(
    "key",
    [
        "customField0",
        "customField01",
        "customField",
        "customfield1",
        "CustomField1",
        "customField-1",
        "customField1 ",
        "customField1Name",
        in_script("customField1", ARABIC_INDIC),
        in_script("customField1", FULLWIDTH),
        "custom_field_1",
        "name",
        "agents",
        "Number",
        "",
        1,
        None,
    ],
)
def test_unknown_or_malformed_keys_are_refused(key: Any) -> None:
    row = {"number": NUMBER, key: "value"}
    with pytest.raises(ValidationError) as info:
        validate_lead(row, position=3)
    assert info.value.field == str(key)
    assert info.value.position == 3
    assert not leads_are_valid([row])


@pytest.mark.parametrize("value", [1, 1.5, None, True, ["a"], {"a": "b"}, b"bytes"])
def test_custom_field_values_must_be_strings(value: Any) -> None:
    row = {"number": NUMBER, "customField2": value}
    with pytest.raises(ValidationError) as info:
        validate_lead(row)
    assert info.value.field == "customField2"
    assert not leads_are_valid([row])


@pytest.mark.parametrize(
    "agents", ["a@x.com", [], [""], [1], ["a@x.com", None], None, {"a@x.com": 1}]
)
def test_agents_assigned_must_be_a_non_empty_list_of_names(agents: Any) -> None:
    row = {"number": NUMBER, "agentsAssigned": agents}
    with pytest.raises(ValidationError) as info:
        validate_lead(row)
    assert info.value.field == "agentsAssigned"
    assert not leads_are_valid([row])


def test_agents_assigned_sequence_is_normalized_to_a_list() -> None:
    wire = validate_lead({"number": NUMBER, "agentsAssigned": ("a@x.com", "b@x.com")})
    assert wire == {"number": NUMBER, "agentsAssigned": ["a@x.com", "b@x.com"]}


def test_lead_struct_is_validated_in_wire_form() -> None:
    lead = Lead(number=NUMBER, agents_assigned=("a@x.com",), custom_fields={1: "Max", 3: "X"})
    assert validate_lead(lead) == {
        "number": NUMBER,
        "agentsAssigned": ["a@x.com"],
        "customField1": "Max",
        "customField3": "X",
    }
    with pytest.raises(ValidationError) as info:
        validate_lead(Lead(number=NUMBER, custom_fields={0: "x"}))
    assert info.value.field == "customField0"
    with pytest.raises(ValidationError) as info:
        validate_lead(Lead(number="12345"))
    assert info.value.field == "number"


@pytest.mark.parametrize("lead", [None, "+919876543210", 42, ["number", NUMBER]])
def test_a_lead_must_be_a_lead_or_a_mapping(lead: Any) -> None:
    with pytest.raises(ValidationError) as info:
        validate_lead(lead, position=7)
    assert info.value.position == 7


def test_validation_error_names_field_position_and_truncated_value() -> None:
    long_value = "+91" + "9" * 500
    leads = [{"number": NUMBER}, {"number": NUMBER}, {"number": long_value}]

    with pytest.raises(ValidationError) as info:
        validate_leads(leads)

    error = info.value
    assert error.field == "number"
    assert error.position == 2
    message = str(error)
    assert "lead #2" in message
    assert "number" in message
    assert "+9199999" in message  # the value is shown...
    assert long_value not in message  # ...but cut short
    assert len(message) < 250


def test_custom_field_error_shows_the_value() -> None:
    with pytest.raises(ValidationError) as info:
        validate_leads([{"number": NUMBER, "customField4": 12345}])
    assert info.value.field == "customField4"
    assert info.value.position == 0
    assert "12345" in str(info.value)


def test_validate_leads_returns_wire_dicts_in_order() -> None:
    leads: list[Any] = [Lead(number=NUMBER, custom_fields={2: "b"}), {"number": "+14155550123"}]
    assert validate_leads(leads) == [
        {"number": NUMBER, "customField2": "b"},
        {"number": "+14155550123"},
    ]
    assert validate_leads(iter([{"number": NUMBER}])) == [{"number": NUMBER}]


def test_validate_leads_needs_at_least_one_lead() -> None:
    with pytest.raises(ValidationError) as info:
        validate_leads([])
    assert info.value.field == "leads"


def test_leads_are_valid_is_conservative_about_types() -> None:
    assert leads_are_valid([])
    assert leads_are_valid([{"number": NUMBER, "agentsAssigned": ["a"], "customField1": "x"}])
    # Not plain dicts: not proven valid (the slow path decides).
    assert not leads_are_valid([OrderedDict(number=NUMBER)])
    assert not leads_are_valid([Lead(number=NUMBER)])
    assert not leads_are_valid([{"number": NUMBER, "agentsAssigned": ("a",)}])


# -- campaign options ------------------------------------------------------------------


def test_custom_field_names_keys() -> None:
    names = {"customField1Name": "Name", "customField12Name": "Brand"}
    assert build_request(custom_field_names=names).custom_field_names == names


@pytest.mark.parametrize(
    "names",
    [
        {"customField0Name": "x"},
        {"customField01Name": "x"},
        {"customField1": "x"},
        {"customfield1Name": "x"},
        {"customField1name": "x"},
        {"Name": "x"},
        {1: "x"},
        ["customField1Name"],
        "customField1Name",
    ],
)
def test_bad_custom_field_names_are_refused(names: Any) -> None:
    with pytest.raises(ValidationError) as info:
        build_request(custom_field_names=names)
    assert info.value.field == "customFieldNames"


def test_custom_field_names_values_must_be_strings() -> None:
    with pytest.raises(ValidationError) as info:
        build_request(custom_field_names={"customField1Name": 3})
    assert info.value.field is not None
    assert info.value.field.startswith("customFieldNames")


def test_global_mapping_needs_agents() -> None:
    with pytest.raises(ValidationError) as info:
        build_request(agent_mapping="global")
    assert info.value.field == "agents"
    with pytest.raises(ValidationError) as info:
        build_request(agent_mapping=AgentMapping.GLOBAL, agents=[])
    assert info.value.field == "agents"
    request = build_request(agent_mapping="global", agents=("a@x.com",))
    assert request.agents == ["a@x.com"]


@pytest.mark.parametrize("agents", ["a@x.com", [""], [None], [3]])
def test_agents_must_be_a_list_of_names(agents: Any) -> None:
    with pytest.raises(ValidationError) as info:
        build_request(agent_mapping="global", agents=agents)
    assert info.value.field == "agents"


def test_agents_without_agent_mapping_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        build_request(agents=["a@x.com"])
    assert info.value.field == "agents"
    assert "agent_mapping" in str(info.value)


@pytest.mark.parametrize("mapping", ["GLOBAL", "implicit", "", "all_agents"])
def test_unknown_agent_mapping_is_refused(mapping: str) -> None:
    with pytest.raises(ValidationError) as info:
        build_request(agent_mapping=mapping, agents=["a@x.com"])
    assert info.value.field == "agentMapping"


def test_name_must_be_a_string() -> None:
    with pytest.raises(ValidationError) as info:
        build_request(name=42)  # type: ignore[arg-type]
    assert info.value.field == "name"


@pytest.mark.parametrize(
    "url", ["http://api.example.com/cb", "https://example.com", "https://127.0.0.1:8443/x?y=1"]
)
def test_callback_urls_accepted(url: str) -> None:
    data = build_request(terminal_callback_url=url, connect_callback_url=url).customer_data
    assert data.terminal_callback_url == url
    assert data.connect_callback_url == url


@pytest.mark.parametrize(
    "url",
    ["/call-data", "api.example.com/cb", "ftp://example.com/cb", "http://", "mailto:a@x.com", 7],
)
@pytest.mark.parametrize(
    ("option", "field"),
    [
        ("terminal_callback_url", "terminalCallbackUrl"),
        ("connect_callback_url", "connectCallbackUrl"),
    ],
)
def test_callback_urls_must_be_absolute_http(url: Any, option: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        build_request(**{option: url})
    assert info.value.field == field


# -- properties: fast path against slow path -------------------------------------------

VALID_NUMBERS = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)
VALID_KEYS = st.integers(1, 10_000).map(lambda n: f"customField{n}")
NAMES = st.text(min_size=1, max_size=12)


@st.composite
def valid_rows(draw: st.DrawFn) -> dict[str, Any]:
    row: dict[str, Any] = {"number": draw(VALID_NUMBERS)}
    if draw(st.booleans()):
        row["agentsAssigned"] = draw(st.lists(NAMES, min_size=1, max_size=3))
    for key in draw(st.lists(VALID_KEYS, max_size=4, unique=True)):
        row[key] = draw(st.text(max_size=10))
    return row


ODD_NUMBERS = st.one_of(
    st.sampled_from(BAD_NUMBERS),
    st.text(alphabet="+0123456789\n \t" + chr(DEVANAGARI + 9) + chr(FULLWIDTH + 1), max_size=20),
    st.from_regex(r"\+[1-9][0-9]{6,14}\n\+[1-9][0-9]{6,14}", fullmatch=True),
    st.integers(),
    st.none(),
)
ODD_KEYS = st.one_of(
    st.sampled_from(
        ["customField0", "customField01", "customfield1", "customField", "agents", "name", ""]
    ),
    st.text(max_size=15),
    st.integers(-2, 2),
)
ODD_VALUES = st.one_of(
    st.text(max_size=5),
    st.integers(),
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=3), max_size=2),
    st.tuples(st.text(max_size=3)),
)


@st.composite
def any_rows(draw: st.DrawFn) -> Any:
    # Mostly valid rows, so that a list often holds one odd row among good ones.
    kind = draw(st.sampled_from(["valid", "valid", "valid", "mutated", "mutated", "foreign"]))
    if kind == "foreign":
        return draw(
            st.one_of(
                st.none(),
                st.text(max_size=5),
                valid_rows().map(OrderedDict),
                valid_rows().map(Lead.from_wire),
            )
        )
    row = draw(valid_rows())
    if kind == "mutated":
        mutation = draw(st.sampled_from(["number", "drop-number", "key", "value", "agents"]))
        if mutation == "number":
            row["number"] = draw(ODD_NUMBERS)
        elif mutation == "drop-number":
            del row["number"]
        elif mutation == "key":
            row[draw(ODD_KEYS)] = draw(ODD_VALUES)
        elif mutation == "value":
            row[draw(VALID_KEYS)] = draw(ODD_VALUES)
        else:
            row["agentsAssigned"] = draw(ODD_VALUES)
    return row


def slow_path_accepts_unchanged(row: Any) -> bool:
    try:
        return validate_lead(row) == row
    except ValidationError:
        return False


@settings(derandomize=True, database=None, max_examples=400, deadline=None)
@given(st.lists(any_rows(), max_size=6))
@example([{"number": "+919876543210\n+919876543211"}])
@example([{"number": NUMBER}, {"number": "+919876543210\n+14155550123"}])
def test_fast_path_never_accepts_what_the_slow_path_refuses(rows: list[Any]) -> None:
    if leads_are_valid(rows):
        for row in rows:
            assert type(row) is dict
            assert slow_path_accepts_unchanged(row), row


@settings(derandomize=True, database=None, max_examples=500, deadline=None)
@given(any_rows())
@example({"number": "+919876543210\n+919876543211"})
def test_fast_path_never_accepts_a_row_the_slow_path_refuses(row: Any) -> None:
    if leads_are_valid([row]):
        assert type(row) is dict
        assert slow_path_accepts_unchanged(row), row


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(st.lists(valid_rows(), max_size=8))
def test_fast_path_accepts_all_valid_plain_dicts(rows: list[dict[str, Any]]) -> None:
    assert all(validate_lead(row) == row for row in rows)
    assert leads_are_valid(rows)
    if rows:
        assert validate_leads(rows) == rows


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(st.lists(any_rows(), min_size=1, max_size=6))
@example([{"number": "+919876543210\n+919876543211"}])
def test_validate_leads_agrees_with_validate_lead(rows: list[Any]) -> None:
    expected: list[dict[str, Any]] | None = []
    for position, row in enumerate(rows):
        try:
            expected.append(validate_lead(row, position))  # type: ignore[union-attr]
        except ValidationError:
            expected = None
            break
    if expected is None:
        with pytest.raises(ValidationError):
            validate_leads(rows)
    else:
        assert validate_leads(rows) == expected


# -- properties: Lead round trips ------------------------------------------------------

LEADS = st.builds(
    Lead,
    number=VALID_NUMBERS,
    agents_assigned=st.none() | st.lists(NAMES, min_size=1, max_size=3).map(tuple),
    custom_fields=st.dictionaries(st.integers(1, 500), st.text(max_size=10), max_size=5),
)


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(LEADS)
def test_lead_wire_round_trip(lead: Lead) -> None:
    wire = lead.to_wire()
    assert Lead.from_wire(wire) == lead
    assert validate_lead(lead) == wire
    assert leads_are_valid([wire])
    # Through JSON bytes too, as the server would receive it.
    assert Lead.from_wire(json.loads(encode(wire))) == lead


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(valid_rows())
def test_wire_round_trip(row: dict[str, Any]) -> None:
    assert Lead.from_wire(row).to_wire() == row


# -- properties: the batched path of Lead objects ----------------------------------------

ODD_LEADS = st.builds(
    Lead,
    number=VALID_NUMBERS | ODD_NUMBERS,
    agents_assigned=st.none() | st.lists(NAMES, min_size=1, max_size=3).map(tuple) | ODD_VALUES,
    custom_fields=st.dictionaries(
        st.integers(-1, 300) | st.booleans() | st.floats(0, 3) | st.text(max_size=3),
        st.text(max_size=5) | ODD_VALUES,
        max_size=4,
    )
    | ODD_VALUES,
)


@settings(derandomize=True, database=None, max_examples=400, deadline=None)
@given(st.lists(LEADS | ODD_LEADS, max_size=6))
def test_wire_leads_of_lead_objects_is_what_validate_lead_returns(leads: list[Lead]) -> None:
    proven = wire_leads(leads)
    if proven is not None:
        # Never accepts what the reference rules refuse, and gives their wire dicts.
        assert proven == [validate_lead(lead, position) for position, lead in enumerate(leads)]


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(st.lists(LEADS, max_size=8))
def test_wire_leads_takes_valid_lead_objects_in_one_batch(leads: list[Lead]) -> None:
    # The batched path vouches for every valid chunk: no lead-by-lead fallback.
    assert wire_leads(leads) == [lead.to_wire() for lead in leads]


@st.composite
def same_shape_leads(draw: st.DrawFn) -> list[Lead]:
    """A chunk as ETL files give it: the same custom fields in the same order in every lead."""
    indexes = draw(
        st.lists(st.integers(-1, 300) | st.booleans(), max_size=4, unique_by=lambda i: (type(i), i))
    )
    named, odd = draw(st.booleans()), draw(st.booleans())
    agents = st.lists(NAMES, min_size=1, max_size=2).map(tuple)
    values = st.text(max_size=4)
    return [
        Lead(
            number=draw(VALID_NUMBERS | ODD_NUMBERS if odd else VALID_NUMBERS),
            agents_assigned=draw((agents | ODD_VALUES if odd else agents) if named else st.none()),
            custom_fields={
                index: draw(values | ODD_VALUES if odd else values) for index in indexes
            },
        )
        for _ in range(draw(st.integers(1, 5)))
    ]


@settings(derandomize=True, database=None, max_examples=400, deadline=None)
@given(same_shape_leads())
def test_wire_leads_of_same_shape_leads_is_what_validate_lead_returns(leads: list[Lead]) -> None:
    # Such a chunk goes column by column (dict(zip(names, values)) a lead): the same dicts.
    proven = wire_leads(leads)
    try:
        expected = [validate_lead(lead, position) for position, lead in enumerate(leads)]
    except ValidationError:
        assert proven is None
        return
    assert proven == expected
    assert [list(row) for row in proven] == [list(lead.to_wire()) for lead in leads]


@settings(derandomize=True, database=None, max_examples=400, deadline=None)
@given(same_shape_leads())
def test_proven_rows_of_same_shape_leads_are_what_validate_lead_returns(leads: list[Lead]) -> None:
    # Such a chunk becomes WireLeads, checked a column at a time: the same leads, the same
    # bytes on the wire (key order included), and nothing the reference rules refuse.
    proven = proven_rows(leads)
    try:
        expected = [validate_lead(lead, position) for position, lead in enumerate(leads)]
    except ValidationError:
        assert proven is None
        return
    assert proven is not None
    assert [wire_dict(row) for row in proven] == expected
    assert encode(list(proven)) == encode(expected)
    if (
        len({tuple(lead.custom_fields) for lead in leads}) == 1
        and len({lead.agents_assigned is None for lead in leads}) == 1
    ):
        assert all(isinstance(row, WireLead) for row in proven)


def test_proven_rows_keeps_dicts_and_falls_back_to_dicts_for_mixed_leads() -> None:
    rows = [{"number": NUMBER, "customField1": "x"}]
    assert proven_rows(rows) is rows
    mixed = [Lead(number=NUMBER, custom_fields={1: "a"}), Lead(number=NUMBER, custom_fields={})]
    assert proven_rows(mixed) == [lead.to_wire() for lead in mixed]
    assert proven_rows([Lead(number=NUMBER, custom_fields={0: "x"})]) is None
    assert proven_rows([Lead(number=NUMBER, agents_assigned=["a", ""])]) is None


def test_wire_leads_returns_plain_dicts_as_given_and_refuses_to_vouch_for_the_rest() -> None:
    rows = [{"number": NUMBER, "customField1": "x"}]
    assert wire_leads(rows) is rows
    assert wire_leads([{"number": "12345"}]) is None
    assert wire_leads([Lead(number=NUMBER), {"number": NUMBER}]) is None  # mixed: lead by lead
    assert wire_leads([Lead(number=NUMBER, custom_fields={0: "x"})]) is None


@pytest.mark.parametrize(("key", "field"), [(True, "customFieldTrue"), (1.0, "customField1.0")])
def test_custom_field_numbers_that_only_equal_an_int_are_refused(key: Any, field: str) -> None:
    # to_wire caches the names of int keys: a key equal to 1 but not an int must not hit it.
    lead = Lead(number=NUMBER, custom_fields={key: "x"})
    assert lead.to_wire() == {"number": NUMBER, field: "x"}
    with pytest.raises(ValidationError) as info:
        validate_lead(lead)
    assert info.value.field == field
    assert wire_leads([lead]) is None
