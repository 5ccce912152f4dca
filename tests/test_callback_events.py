"""Tests for ryng_async._callback_events: callback structs, parse_callback, encode_callback."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ryng_async import _callback_events
from ryng_async._callback_events import (
    CallbackEvent,
    ConnectCallback,
    TerminalCallback,
    encode_callback,
    parse_callback,
)
from ryng_async._exceptions import RyngError, ValidationError

# The vendor's "Connect Callback Body Example", verbatim.
CONNECT_EXAMPLE = b"""{
    "callID": 131,
    "callbackType": "connect",
    "event": "agent-connected",
    "agentID": 67136,
    "agentUsername": "ashwin@example.com",
    "agentNum": "+919999999999",
    "customerNum": "+917777445511",
    "callCreated": "2023-02-01T18:13:18.000Z",
    "callStarted": null,
    "callDirection": "outbound",
    "customFieldNames": {
        "customField1Name": "customer name",
        "customField2Name": "meta data 1",
        "customField3Name": "meta data 2",
        "customField4Name": "meta data 3",
        "customField5Name": "meta data 4",
        "customField6Name": "meta data 5",
        "customField7Name": "meta data 6",
        "customField8Name": "meta data 7"
    },
    "customFields": {
        "customField1": "ashwin",
        "customField2": "data 1",
        "customField3": "data 2",
        "customField4": "data 3",
        "customField5": "data 4",
        "customField6": "data 5",
        "customField7": "data 6",
        "customField8": "data 7"
    }
}"""

# The vendor's "Terminal Callback Body Example", verbatim except for the comma restored
# after "event": "call-ended".
TERMINAL_EXAMPLE = b"""{
    "callID": 28,
    "callLogID": 64,
    "callbackType": "terminal",
    "event": "call-ended",
    "agentID": 67131,
    "agentUsername": "ashwin@example.com",
    "agentNum": "+91999999999",
    "customerNum": "+917445662236",
    "virtualNum": "+914954389444",
    "callCreated": "2023-01-18T10:08:36.000Z",
    "callStarted": "2023-01-19T08:07:07.000Z",
    "callEnded": "2023-01-19T08:12:52.000Z",
    "callDisposed": "2023-01-19T08:13:00.000Z",
    "callbackTime": null,
    "callDirection": "outbound",
    "talktime": 5,
    "callDuration": null,
    "parentDisposition": null,
    "disposition": "New Disposition",
    "notes": "",
    "status": "2",
    "recordingUrl": "https://s3-ap-southeast-1.amazonaws.com/exotelrecordings/example1/2af2864f323c31e1da22c2e82d78178s.mp3",
    "legDetails": { "leg0Status": 5, "leg0Duration": 16, "leg1Status": 5, "leg1Duration": 5 },
    "customFieldNames": {
        "customField1Name": "customer name",
        "customField2Name": "custfield1",
        "customField3Name": "custfield2",
        "customField4Name": "custfield3",
        "customField5Name": "meta data 4",
        "customField6Name": "meta data 5",
        "customField7Name": "meta data 6",
        "customField8Name": "meta data 7"
    },
    "customFields": {
        "customField1": "Test call",
        "customField2": "https://www.google.com/search?q=instagram+login&rlz=1C1CHBF_enIN1025IN1025&oq=ins&aqs=chrome.0.69i59j0i131i433i512j69i57j0i131i433i512l3j69i65j69i60.3446j0j7&sourceid=chrome&ie=UTF-8",
        "customField3": "custfield",
        "customField4": "data 7",
        "customField5": "https://www.google.com/search?q=instagram+login&rlz=1C1CHBF_enIN1025IN1025&oq=ins&aqs=chrome.0.69i59j0i131i433i512j69i57j0i131i433i512l3j69i65j69i60.3446j0j7&sourceid=chrome&ie=UTF-12",
        "customField6": "data 9",
        "customField7": "data 10",
        "customField8": "data 11"
    }
}"""

# The terminal example exactly as the vendor published it: no comma after "call-ended".
TERMINAL_EXAMPLE_AS_PUBLISHED = TERMINAL_EXAMPLE.replace(
    b'"event": "call-ended",\n', b'"event": "call-ended"\n', 1
)

GOOGLE_URL = (
    "https://www.google.com/search?q=instagram+login&rlz=1C1CHBF_enIN1025IN1025&oq=ins"
    "&aqs=chrome.0.69i59j0i131i433i512j69i57j0i131i433i512l3j69i65j69i60.3446j0j7"
    "&sourceid=chrome&ie="
)

TIMESTAMP_KEYS = {"callCreated", "callStarted", "callEnded", "callDisposed", "callbackTime"}
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _wire_names(cls: type[msgspec.Struct]) -> set[str]:
    return {field.encode_name for field in msgspec.structs.fields(cls)}


_REMOVE = object()


def _with(example: bytes, **changes: Any) -> bytes:
    """Return ``example`` re-encoded with top-level keys replaced (``_REMOVE``: dropped)."""
    body = json.loads(example)
    for key, value in changes.items():
        if value is _REMOVE:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


# -- the vendor's examples ---------------------------------------------------------------


def test_public_names() -> None:
    assert sorted(_callback_events.__all__) == [
        "CallbackEvent",
        "ConnectCallback",
        "TerminalCallback",
        "encode_callback",
        "parse_callback",
    ]
    assert all(hasattr(_callback_events, name) for name in _callback_events.__all__)


def test_published_terminal_example_differs_only_by_the_comma() -> None:
    assert TERMINAL_EXAMPLE_AS_PUBLISHED != TERMINAL_EXAMPLE
    assert len(TERMINAL_EXAMPLE) - len(TERMINAL_EXAMPLE_AS_PUBLISHED) == 1


@pytest.mark.parametrize(
    ("example", "cls"),
    [(CONNECT_EXAMPLE, ConnectCallback), (TERMINAL_EXAMPLE, TerminalCallback)],
)
def test_structs_cover_every_field_of_the_example(
    example: bytes, cls: type[msgspec.Struct]
) -> None:
    # Unknown fields are ignored, so a misspelt wire name would silently read as None.
    keys = set(json.loads(example))
    assert keys - {"callbackType"} == _wire_names(cls)


def test_connect_example() -> None:
    event = parse_callback(CONNECT_EXAMPLE)

    assert isinstance(event, ConnectCallback)
    assert event.call_id == 131
    assert event.event == "agent-connected"
    assert event.agent_id == 67136
    assert event.agent_username == "ashwin@example.com"
    assert event.agent_num == "+919999999999"
    assert event.customer_num == "+917777445511"
    assert event.call_created == datetime(2023, 2, 1, 18, 13, 18, tzinfo=UTC)
    assert event.call_created.utcoffset() == timedelta(0)
    assert event.call_started is None
    assert event.call_direction == "outbound"
    assert event.custom_field_names == {
        "customField1Name": "customer name",
        **{f"customField{n}Name": f"meta data {n - 1}" for n in range(2, 9)},
    }
    assert event.custom_fields == {
        "customField1": "ashwin",
        **{f"customField{n}": f"data {n - 1}" for n in range(2, 9)},
    }


def test_terminal_example() -> None:
    event = parse_callback(TERMINAL_EXAMPLE)

    assert isinstance(event, TerminalCallback)
    assert event.call_id == 28
    assert event.call_log_id == 64
    assert event.event == "call-ended"
    assert event.agent_id == 67131
    assert event.agent_username == "ashwin@example.com"
    assert event.agent_num == "+91999999999"
    assert event.customer_num == "+917445662236"
    assert event.virtual_num == "+914954389444"
    assert event.call_created == datetime(2023, 1, 18, 10, 8, 36, tzinfo=UTC)
    assert event.call_started == datetime(2023, 1, 19, 8, 7, 7, tzinfo=UTC)
    assert event.call_ended == datetime(2023, 1, 19, 8, 12, 52, tzinfo=UTC)
    assert event.call_disposed == datetime(2023, 1, 19, 8, 13, 0, tzinfo=UTC)
    for stamp in (event.call_created, event.call_started, event.call_ended, event.call_disposed):
        assert stamp is not None
        assert stamp.utcoffset() == timedelta(0)
    assert event.callback_time is None
    assert event.call_direction == "outbound"
    assert event.talktime == 5
    assert event.call_duration is None
    assert event.parent_disposition is None
    assert event.disposition == "New Disposition"
    assert event.notes == ""
    assert event.status == "2"
    assert event.recording_url == (
        "https://s3-ap-southeast-1.amazonaws.com/exotelrecordings/example1/"
        "2af2864f323c31e1da22c2e82d78178s.mp3"
    )
    assert event.leg_details == {
        "leg0Status": 5,
        "leg0Duration": 16,
        "leg1Status": 5,
        "leg1Duration": 5,
    }
    assert event.custom_field_names == {
        "customField1Name": "customer name",
        "customField2Name": "custfield1",
        "customField3Name": "custfield2",
        "customField4Name": "custfield3",
        "customField5Name": "meta data 4",
        "customField6Name": "meta data 5",
        "customField7Name": "meta data 6",
        "customField8Name": "meta data 7",
    }
    assert event.custom_fields == {
        "customField1": "Test call",
        "customField2": GOOGLE_URL + "UTF-8",
        "customField3": "custfield",
        "customField4": "data 7",
        "customField5": GOOGLE_URL + "UTF-12",
        "customField6": "data 9",
        "customField7": "data 10",
        "customField8": "data 11",
    }


@pytest.mark.parametrize("example", [CONNECT_EXAMPLE, TERMINAL_EXAMPLE])
def test_examples_round_trip(example: bytes) -> None:
    event = parse_callback(example)
    encoded = encode_callback(event)

    assert parse_callback(encoded) == event
    # Same wire form as the vendor's, key for key; timestamps lose the ".000" only.
    original, ours = json.loads(example), json.loads(encoded)
    assert ours.keys() == original.keys()
    for key, value in original.items():
        if key in TIMESTAMP_KEYS and value is not None:
            assert datetime.fromisoformat(ours[key]) == datetime.fromisoformat(value), key
        else:
            assert ours[key] == value, key


@pytest.mark.parametrize(
    "body",
    [
        TERMINAL_EXAMPLE.decode(),
        bytearray(TERMINAL_EXAMPLE),
        memoryview(TERMINAL_EXAMPLE),
    ],
    ids=["str", "bytearray", "memoryview"],
)
def test_accepts_any_body_type(body: str | bytearray | memoryview) -> None:
    assert parse_callback(body) == parse_callback(TERMINAL_EXAMPLE)


def test_unknown_fields_are_ignored() -> None:
    body = _with(CONNECT_EXAMPLE, newVendorField={"nested": [1, 2.5, None]}, virtualNum="+91")
    assert parse_callback(body) == parse_callback(CONNECT_EXAMPLE)


@pytest.mark.parametrize("callback_type", ["connect", "terminal"])
def test_only_call_id_and_event_are_required(callback_type: str) -> None:
    body = json.dumps({"callbackType": callback_type, "callID": 7, "event": "x"}).encode()

    event = parse_callback(body)

    cls = ConnectCallback if callback_type == "connect" else TerminalCallback
    assert event == cls(call_id=7, event="x")
    assert event.agent_id is None
    assert event.call_created is None
    assert event.custom_fields == {}


def test_timestamps_with_an_offset_are_kept_aware() -> None:
    event = parse_callback(_with(CONNECT_EXAMPLE, callCreated="2023-02-01T23:43:18+05:30"))
    assert event.call_created == datetime(2023, 2, 1, 18, 13, 18, tzinfo=UTC)


def test_int64_bounds_are_accepted() -> None:
    assert parse_callback(_with(CONNECT_EXAMPLE, callID=INT64_MAX)).call_id == INT64_MAX
    assert parse_callback(_with(CONNECT_EXAMPLE, callID=INT64_MIN)).call_id == INT64_MIN


def test_structs_are_frozen() -> None:
    event = parse_callback(CONNECT_EXAMPLE)
    with pytest.raises(AttributeError):
        event.call_id = 1  # type: ignore[misc]


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "cause"),
    [
        pytest.param(
            _with(CONNECT_EXAMPLE, callbackType=_REMOVE),
            "callbackType",
            msgspec.ValidationError,
            id="missing-callbackType",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callbackType="foo"),
            "callbackType",
            msgspec.ValidationError,
            id="unknown-callbackType",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callbackType=None),
            "callbackType",
            msgspec.ValidationError,
            id="null-callbackType",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callID="131"),
            "callID",
            msgspec.ValidationError,
            id="callID-string",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callID=131.0),
            "callID",
            msgspec.ValidationError,
            id="callID-float",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callID=True),
            "callID",
            msgspec.ValidationError,
            id="callID-bool",
        ),
        pytest.param(
            _with(TERMINAL_EXAMPLE, callID=_REMOVE),
            "callID",
            msgspec.ValidationError,
            id="missing-callID",
        ),
        pytest.param(
            _with(TERMINAL_EXAMPLE, event=_REMOVE),
            "event",
            msgspec.ValidationError,
            id="missing-event",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callID=10**30),
            "callID",
            msgspec.ValidationError,
            id="callID-huge",
        ),
        pytest.param(
            CONNECT_EXAMPLE.replace(b"131", b"9" * 5000, 1),
            "callID",
            msgspec.ValidationError,
            id="callID-5000-digits",
        ),
        pytest.param(
            CONNECT_EXAMPLE.replace(b"131", b"1e400", 1),
            "callID",
            msgspec.ValidationError,
            id="callID-1e400",
        ),
        pytest.param(
            _with(TERMINAL_EXAMPLE, talktime=INT64_MAX + 1),
            "talktime",
            msgspec.ValidationError,
            id="talktime-over-int64",
        ),
        pytest.param(
            _with(TERMINAL_EXAMPLE, status=2),
            "status",
            msgspec.ValidationError,
            id="status-int",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callCreated="2023-02-01T18:13:18.000"),
            "callCreated",
            msgspec.ValidationError,
            id="naive-timestamp",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, callCreated="yesterday"),
            "callCreated",
            msgspec.ValidationError,
            id="bad-timestamp",
        ),
        pytest.param(
            _with(TERMINAL_EXAMPLE, legDetails={"leg0Status": "5"}),
            "legDetails[...]",
            msgspec.ValidationError,
            id="legDetails-value",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, customFields=None),
            "customFields",
            msgspec.ValidationError,
            id="customFields-null",
        ),
        pytest.param(
            _with(CONNECT_EXAMPLE, customFields={"customField1": 1}),
            "customFields[...]",
            msgspec.ValidationError,
            id="customFields-value",
        ),
        pytest.param(b"[1, 2]", None, msgspec.ValidationError, id="array"),
        pytest.param(b'"connect"', None, msgspec.ValidationError, id="string"),
        pytest.param(b"null", None, msgspec.ValidationError, id="null"),
        pytest.param(b"{", None, msgspec.DecodeError, id="truncated"),
        pytest.param(b"", None, msgspec.DecodeError, id="empty"),
        pytest.param(b"callbackType=connect", None, msgspec.DecodeError, id="not-json"),
        pytest.param(CONNECT_EXAMPLE + b"}", None, msgspec.DecodeError, id="trailing"),
        pytest.param(b"\xff\xfe{}", None, msgspec.DecodeError, id="invalid-utf8"),
        pytest.param(
            TERMINAL_EXAMPLE_AS_PUBLISHED, None, msgspec.DecodeError, id="terminal-as-published"
        ),
        pytest.param(b"[" * 100_000, None, msgspec.ValidationError, id="deep-array"),
        pytest.param(
            b'{"callbackType": "connect", "callID": 1, "event": "e", "x": '
            + b"[" * 100_000
            + b"]" * 100_000
            + b"}",
            None,
            RecursionError,
            id="deep-unknown-field",
        ),
        pytest.param(
            '{"callbackType": "connect", "callID": 1, "event": "\ud800"}',
            None,
            UnicodeError,
            id="lone-surrogate-str",
        ),
    ],
)
def test_bad_bodies_raise_validation_error(
    body: bytes | str, field: str | None, cause: type[BaseException]
) -> None:
    with pytest.raises(ValidationError) as info:
        parse_callback(body)

    error = info.value
    assert isinstance(error, RyngError)
    assert error.field == field
    assert isinstance(error.__cause__, cause)
    assert error.position is None
    if field is not None:
        # msgspec's "$.path" is kept in the message, and the field leads it.
        assert str(error).startswith(f"{field}: ")
        assert f"`$.{field}`" in str(error) or f"`{field}`" in str(error)


def test_unknown_callback_type_message_names_the_value() -> None:
    with pytest.raises(ValidationError, match=r"Invalid value 'foo' - at `\$\.callbackType`"):
        parse_callback(_with(CONNECT_EXAMPLE, callbackType="foo"))


def test_wrong_type_message_names_the_path() -> None:
    with pytest.raises(
        ValidationError, match=r"^callID: .*Expected `int`, got `str` - at `\$\.callID`"
    ):
        parse_callback(_with(CONNECT_EXAMPLE, callID="131"))


def test_nested_wrong_type_message_names_the_path() -> None:
    body = _with(TERMINAL_EXAMPLE, legDetails={"leg0Status": None})
    with pytest.raises(ValidationError, match=r"at `\$\.legDetails\[\.\.\.\]`"):
        parse_callback(body)


def test_invalid_json_message() -> None:
    with pytest.raises(ValidationError, match="not valid JSON"):
        parse_callback(TERMINAL_EXAMPLE_AS_PUBLISHED)


# -- properties --------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=300, derandomize=True, deadline=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=20,
)

# Bodies close to valid ones, so the property also reaches field-level checks: the
# examples' keys (and callbackType's values) with arbitrary JSON values, some keys dropped.
_EXAMPLE_BODIES = [json.loads(CONNECT_EXAMPLE), json.loads(TERMINAL_EXAMPLE)]


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = dict(draw(st.sampled_from(_EXAMPLE_BODIES)))
    keys = sorted(body)
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        body[key] = draw(json_values)
    for key in draw(st.lists(st.sampled_from(keys), max_size=2, unique=True)):
        del body[key]
    if draw(st.booleans()):
        body["callbackType"] = draw(st.sampled_from(["connect", "terminal", "foo", ""]))
    return body


def _parses_or_validation_error(body: bytes | str) -> None:
    try:
        event = parse_callback(body)
    except ValidationError:
        return
    assert isinstance(event, ConnectCallback | TerminalCallback)


@PROPERTY_SETTINGS
@given(st.binary())
def test_arbitrary_bytes_parse_or_raise_validation_error(body: bytes) -> None:
    _parses_or_validation_error(body)


@PROPERTY_SETTINGS
@given(json_values)
def test_arbitrary_json_parses_or_raises_validation_error(value: Any) -> None:
    _parses_or_validation_error(json.dumps(value).encode())


@PROPERTY_SETTINGS
@given(near_valid_bodies())
def test_near_valid_bodies_parse_or_raise_validation_error(body: dict[str, Any]) -> None:
    _parses_or_validation_error(json.dumps(body).encode())
    _parses_or_validation_error(json.dumps(body))


ints = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
texts = st.text()
timestamps = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)
string_maps = st.dictionaries(texts, texts, max_size=4)

COMMON_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "call_id": ints,
    "event": texts,
    "agent_id": st.none() | ints,
    "agent_username": st.none() | texts,
    "agent_num": st.none() | texts,
    "customer_num": st.none() | texts,
    "call_created": st.none() | timestamps,
    "call_started": st.none() | timestamps,
    "call_direction": st.none() | texts,
    "custom_field_names": string_maps,
    "custom_fields": string_maps,
}
TERMINAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    **COMMON_FIELDS,
    "call_log_id": st.none() | ints,
    "virtual_num": st.none() | texts,
    "call_ended": st.none() | timestamps,
    "call_disposed": st.none() | timestamps,
    "callback_time": st.none() | timestamps,
    "talktime": st.none() | ints,
    "call_duration": st.none() | ints,
    "parent_disposition": st.none() | texts,
    "disposition": st.none() | texts,
    "notes": st.none() | texts,
    "status": st.none() | texts,
    "recording_url": st.none() | texts,
    "leg_details": st.dictionaries(texts, ints, max_size=4),
}

callbacks: st.SearchStrategy[CallbackEvent] = st.builds(
    ConnectCallback, **COMMON_FIELDS
) | st.builds(TerminalCallback, **TERMINAL_FIELDS)


@pytest.mark.parametrize(
    ("cls", "strategies"),
    [(ConnectCallback, COMMON_FIELDS), (TerminalCallback, TERMINAL_FIELDS)],
)
def test_round_trip_strategies_cover_every_field(
    cls: type[msgspec.Struct], strategies: dict[str, Any]
) -> None:
    assert set(strategies) == set(cls.__struct_fields__)


@PROPERTY_SETTINGS
@given(callbacks)
def test_generated_callbacks_round_trip(event: CallbackEvent) -> None:
    encoded = encode_callback(event)

    assert parse_callback(encoded) == event
    assert json.loads(encoded)["callbackType"] == (
        "connect" if isinstance(event, ConnectCallback) else "terminal"
    )
