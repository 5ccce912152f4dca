"""Typed models for the callbacks Ryng POSTs back while a campaign runs.

Ryng sends two kinds of callback, told apart by their ``callbackType``:

* ``"connect"``: at the milestones of a call (agent picks up, customer picks up, call
  ends), to the campaign's ``connectCallbackUrl``: `ConnectCallback`.
* ``"terminal"``: once per call when it reaches its final state, with the disposition
  details, to the ``terminalCallbackUrl``: `TerminalCallback`.

`parse_callback` turns a request body into the right one (a tagged union, decoded in one
pass) and raises `ValidationError` for anything else. The models carry every field of the
vendor's two published examples with the vendor's wire names; only ``callID`` and
``event`` are required, other fields default to None (or an empty mapping), because the
vendor does not say which fields are always sent. Unknown fields are ignored, so new
vendor fields do not break the receiver, but the types of known fields are checked.
"""

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Final, TypeAlias

import msgspec

from ._exceptions import ValidationError

__all__ = [
    "CallbackEvent",
    "ConnectCallback",
    "TerminalCallback",
    "encode_callback",
    "parse_callback",
]

# Ids and durations land in SQLite INTEGER columns downstream; JSON allows integers of any
# size, so anything outside int64 is refused here rather than overflowing later.
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
# A timestamp without an offset is ambiguous; the vendor sends UTC with a "Z" suffix.
_Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


class _Callback(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    rename="camel",
    tag_field="callbackType",
):
    """Shared struct configuration: camelCase wire names, tagged by ``callbackType``."""


# Subclasses repeat frozen/kw_only: msgspec inherits them, but mypy's dataclass_transform
# only sees what each class statement says.


class ConnectCallback(_Callback, frozen=True, kw_only=True, tag="connect"):
    """A connect callback: a milestone of a call (``"callbackType": "connect"``).

    Sent to ``connectCallbackUrl`` when the agent picks up, when the customer picks up
    and when the call ends.

    Attributes:
        call_id: the call's id (``callID``).
        event: the milestone, e.g. ``"agent-connected"``.
        agent_id: the agent's numeric id (``agentID``).
        agent_username: the agent's username, usually an email address.
        agent_num: the agent's phone number.
        customer_num: the customer's phone number.
        call_created: when the call was created (timezone-aware).
        call_started: when the call started, or None if it has not.
        call_direction: e.g. ``"outbound"``.
        custom_field_names: header names, ``{"customField1Name": "customer name", ...}``.
        custom_fields: the lead's values, ``{"customField1": "ashwin", ...}``.
    """

    call_id: _Int = msgspec.field(name="callID")
    event: str
    agent_id: _Int | None = msgspec.field(default=None, name="agentID")
    agent_username: str | None = None
    agent_num: str | None = None
    customer_num: str | None = None
    call_created: _Timestamp | None = None
    call_started: _Timestamp | None = None
    call_direction: str | None = None
    custom_field_names: dict[str, str] = msgspec.field(default_factory=dict)
    custom_fields: dict[str, str] = msgspec.field(default_factory=dict)


class TerminalCallback(_Callback, frozen=True, kw_only=True, tag="terminal"):
    """A terminal callback: the final state of one call (``"callbackType": "terminal"``).

    Sent once per call to ``terminalCallbackUrl``, with the disposition details.

    Attributes:
        call_id: the call's id (``callID``).
        call_log_id: the call log entry's id (``callLogID``).
        event: e.g. ``"call-ended"``.
        agent_id: the agent's numeric id (``agentID``).
        agent_username: the agent's username, usually an email address.
        agent_num: the agent's phone number.
        customer_num: the customer's phone number.
        virtual_num: the virtual number the call was placed from.
        call_created: when the call was created (timezone-aware, like all timestamps).
        call_started: when the call started, or None.
        call_ended: when the call ended, or None.
        call_disposed: when the agent disposed the call, or None.
        callback_time: the callback the agent scheduled, or None.
        call_direction: e.g. ``"outbound"``.
        talktime: talk time in seconds, or None.
        call_duration: call duration in seconds, or None.
        parent_disposition: the parent of `disposition`, or None.
        disposition: the disposition the agent chose, or None.
        notes: the agent's notes.
        status: the vendor's call status code, a string such as ``"2"``.
        recording_url: the call recording's URL, or None.
        leg_details: per-leg integers, ``{"leg0Status": 5, "leg0Duration": 16, ...}``.
        custom_field_names: header names, ``{"customField1Name": "customer name", ...}``.
        custom_fields: the lead's values, ``{"customField1": "Test call", ...}``.
    """

    call_id: _Int = msgspec.field(name="callID")
    call_log_id: _Int | None = msgspec.field(default=None, name="callLogID")
    event: str
    agent_id: _Int | None = msgspec.field(default=None, name="agentID")
    agent_username: str | None = None
    agent_num: str | None = None
    customer_num: str | None = None
    virtual_num: str | None = None
    call_created: _Timestamp | None = None
    call_started: _Timestamp | None = None
    call_ended: _Timestamp | None = None
    call_disposed: _Timestamp | None = None
    callback_time: _Timestamp | None = None
    call_direction: str | None = None
    talktime: _Int | None = None
    call_duration: _Int | None = None
    parent_disposition: str | None = None
    disposition: str | None = None
    notes: str | None = None
    status: str | None = None
    recording_url: str | None = None
    leg_details: dict[str, _Int] = msgspec.field(default_factory=dict)
    custom_field_names: dict[str, str] = msgspec.field(default_factory=dict)
    custom_fields: dict[str, str] = msgspec.field(default_factory=dict)


CallbackEvent: TypeAlias = ConnectCallback | TerminalCallback
"""Either kind of callback, as `parse_callback` returns it."""

_DECODER: Final[msgspec.json.Decoder[CallbackEvent]] = msgspec.json.Decoder(CallbackEvent)
_ENCODER: Final = msgspec.json.Encoder()

# msgspec ends a validation message with " - at `$.path`" (absent at the top level) and
# names a missing field as "Object missing required field `name`".
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING_FIELD = re.compile(r"^Object missing required field `(?P<name>[^`]+)`")


def _field_of(message: str) -> str | None:
    """Return the wire path a msgspec validation message points at, without ``$.``."""
    at = _AT_PATH.search(message)
    path = at.group("path").removeprefix(".") if at else ""
    missing = _MISSING_FIELD.match(message)
    if missing:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return path or None


def parse_callback(body: bytes | bytearray | memoryview | str) -> CallbackEvent:
    """Parse a callback request body into a `ConnectCallback` or `TerminalCallback`.

    Args:
        body: the raw request body: JSON text as bytes (UTF-8) or str.

    Returns:
        The callback, its class chosen by the body's ``callbackType``.

    Raises:
        ValidationError: the body is not valid UTF-8 JSON, is not an object, has no or an
            unknown ``callbackType``, or a known field has the wrong type. ``field`` holds
            the offending wire path (e.g. ``"callID"``) when there is one, and the message
            keeps msgspec's ``$.path``.
    """
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise ValidationError(
            f"invalid callback body: {message}", field=_field_of(message)
        ) from exc
    except msgspec.DecodeError as exc:
        if _has_lone_surrogate(body):
            raise ValidationError(
                "callback body is not valid JSON: it holds a lone UTF-16 surrogate escape "
                "(\\ud800-\\udfff without its pair), which is no character"
            ) from exc
        raise ValidationError(f"callback body is not valid JSON: {exc}") from exc
    except UnicodeError as exc:
        # A str body holding lone surrogates cannot be encoded to UTF-8.
        raise ValidationError(f"callback body is not valid Unicode text: {exc}") from exc
    except RecursionError as exc:
        raise ValidationError("callback body is nested too deeply") from exc


def encode_callback(event: CallbackEvent) -> bytes:
    """Encode a callback to JSON bytes in the vendor's wire form.

    The result includes ``callbackType`` and every field (None as ``null``), as Ryng
    sends it, so ``parse_callback(encode_callback(event)) == event``. Timestamps must be
    timezone-aware for the result to parse back.

    Args:
        event: the callback to encode.

    Returns:
        The JSON body.
    """
    return _ENCODER.encode(event)


def _has_lone_surrogate(body: bytes | bytearray | memoryview | str) -> bool:
    r"""Whether a body msgspec refused is JSON that escapes a lone surrogate (error path only).

    msgspec reports ``"\ud800"`` as "Input data was truncated"; Python's json reads it, as
    a str that cannot be encoded.
    """
    try:
        value = json.loads(bytes(body) if not isinstance(body, str) else body)
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


_any_json = msgspec.json.Decoder()
_compact = msgspec.json.format


def _count_keys(value: Any) -> int:
    """How many names the objects in a decoded JSON value hold, each object's once."""
    items: Iterable[Any]
    if type(value) is dict:
        count = len(value)
        items = value.values()
    elif type(value) is list:
        count, items = 0, value
    else:
        return 0
    for item in items:
        if type(item) is dict or type(item) is list:
            count += _count_keys(item)
    return count


def duplicate_key(body: bytes) -> str | None:
    """Return a name that one JSON object of ``body`` holds twice, else None.

    Parsers disagree on such a body: msgspec keeps the last value, SQLite's
    ``json_extract`` the first, so the receiver refuses it. ``body`` must be valid JSON.
    Fast path: in the body with its whitespace stripped (``msgspec.json.format``, which
    keeps every name and string as written), each name is a string followed by ``":``, so
    when the names decoded (each object's names once) are as many as the ``":`` there
    (names, plus any inside strings), there is no duplicate; otherwise a slower exact
    look settles it.

    Raises:
        ValidationError: the body is nested too deeply to look through.
    """
    try:
        decoded = _any_json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec 0.18 raises the latter
        return None  # e.g. not UTF-8 inside a field parse_callback skips: the store says so
    except RecursionError as exc:
        raise ValidationError("callback body is nested too deeply") from exc
    colons = _compact(body, indent=-1).count(b'":')
    try:
        if _count_keys(decoded) == colons:
            return None
        found: list[str] = []

        def pairs(items: list[tuple[str, Any]]) -> None:
            seen: set[str] = set()
            for name, _ in items:
                if name in seen:
                    found.append(name)
                    return
                seen.add(name)

        json.loads(body, object_pairs_hook=pairs)
    except RecursionError as exc:
        raise ValidationError("callback body is nested too deeply") from exc
    return found[0] if found else None
