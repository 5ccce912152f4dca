"""Wire structs of the Append Campaign API and their reused encoder and decoders."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import msgspec

__all__ = [
    "AgentMapping",
    "AppendRequest",
    "AppendResponse",
    "CampaignOptions",
    "CustomerData",
    "Lead",
    "LeadInput",
    "WireLead",
    "WireRow",
    "decode_request",
    "decode_response",
    "encode",
    "wire_dict",
    "wire_lead_class",
]


class AgentMapping(enum.StrEnum):
    """How Ryng assigns agents to the calls of an append.

    Plain strings (``"global"``, ``"inline"``, ``"all-agents"``) are accepted wherever an
    `AgentMapping` is.
    """

    GLOBAL = "global"
    """Calls go to the agents named in ``agents``."""
    INLINE = "inline"
    """Each lead names its agents in ``agentsAssigned`` (or the campaign's are used)."""
    ALL_AGENTS = "all-agents"
    """Every agent may take the calls (the vendor's default)."""


class Lead(msgspec.Struct, frozen=True, kw_only=True):
    """One customer row to call.

    Attributes:
        number: the customer's number in E.164 form, ``+`` then 7 to 15 digits.
        agents_assigned: usernames of the agents who may take this call (``inline`` mapping).
        custom_fields: values of the campaign's custom fields by number: ``{1: "Max"}`` is
            sent as ``"customField1": "Max"``.

    Bulk and single appends also take plain mappings in the wire form
    (``{"number": ..., "agentsAssigned": [...], "customField1": ...}``).
    """

    number: str
    agents_assigned: Sequence[str] | None = None
    custom_fields: Mapping[int, str] = msgspec.field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        """Return the lead in the vendor's wire form (not validated)."""
        wire: dict[str, Any] = {"number": self.number}
        agents = self.agents_assigned
        if agents is not None:
            # A bare string stays a string, for validation to refuse (not one agent a letter).
            wire["agentsAssigned"] = agents if isinstance(agents, str | bytes) else list(agents)
        names = _FIELD_NAMES
        for index, value in self.custom_fields.items():
            # An exact int only: True == 1, yet it must stay "customFieldTrue" (refused).
            name = names.get(index) if type(index) is int else None
            wire[name or f"customField{index}"] = value
        return wire

    @classmethod
    def from_wire(cls, row: Mapping[str, Any]) -> Lead:
        """Build a `Lead` from a wire-form mapping (not validated; unknown keys ignored)."""
        custom = {
            int(key[11:]): value
            for key, value in row.items()
            if key.startswith("customField") and key[11:].isdigit()
        }
        agents = row.get("agentsAssigned")
        return cls(
            number=row["number"],
            agents_assigned=None if agents is None else tuple(agents),
            custom_fields=custom,
        )


# The wire names of the usual custom fields, made once rather than per lead.
_FIELD_NAMES = {index: f"customField{index}" for index in range(1, 257)}

LeadInput = Lead | Mapping[str, Any]
"""A lead as the SDK takes it: a `Lead` or a wire-form mapping."""


class WireLead(msgspec.Struct, frozen=True, gc=False):
    """A valid lead in wire form, as a struct whose field names are the wire names.

    The batched check of a chunk of `Lead` s makes one per lead, of a class made once per
    set of fields (`wire_lead_class`): building and encoding it costs a fraction of a
    dict's. Encoded, it is the JSON object `Lead.to_wire` gives; `wire_dict` reads it as
    that dict.
    """

    number: str


WireRow = dict[str, Any] | WireLead
"""A valid lead as a batch holds it: a wire-form dict or a `WireLead`."""

# One class per set of wire names seen; bounded, past which the caller makes dicts.
_WIRE_CLASSES: dict[tuple[str, ...], type[WireLead]] = {}
_MAX_WIRE_CLASSES = 1024


def wire_lead_class(names: tuple[str, ...]) -> type[WireLead] | None:
    """The `WireLead` class with fields ``number`` then ``names`` (None past the bound)."""
    made = _WIRE_CLASSES.get(names)
    if made is None and len(_WIRE_CLASSES) < _MAX_WIRE_CLASSES:
        made = _WIRE_CLASSES[names] = msgspec.defstruct(  # type: ignore[assignment]
            "WireLead",
            [(name, Any) for name in names],
            bases=(WireLead,),
            frozen=True,
            gc=False,
            module=__name__,
        )
    return made


def wire_dict(row: WireRow) -> dict[str, Any]:
    """A lead of a batch as its wire-form dict."""
    return msgspec.structs.asdict(row) if isinstance(row, WireLead) else row


class CampaignOptions(TypedDict, total=False):
    """The campaign options of an append, as keyword arguments (every one optional).

    The one place they are named: `RyngClient.append`, the bulk calls (`BulkOptions`)
    and the request builder all take these keys.

    Keys:
        name: the campaign name Ryng shows for this append.
        agent_mapping: ``"global"``, ``"inline"`` or ``"all-agents"``.
        agents: agent usernames; required (non-empty) with ``"global"``.
        custom_field_names: ``{"customField1Name": "Name", ...}``.
        terminal_callback_url: where Ryng posts each call's terminal callback.
        connect_callback_url: where Ryng posts the connect callbacks.
    """

    name: str | None
    agent_mapping: AgentMapping | str | None
    agents: Sequence[str] | None
    custom_field_names: Mapping[str, str] | None
    terminal_callback_url: str | None
    connect_callback_url: str | None


class CustomerData(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """The ``customerData`` object of a request: callback URLs and the leads."""

    terminal_callback_url: str | None = None
    connect_callback_url: str | None = None
    # Must stay the last field: the bulk engine splices encoded leads in before "]}}".
    json_data: list[dict[str, Any]] = msgspec.field(default_factory=list)


class AppendRequest(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """The JSON body of one Append Campaign request, field for field as the vendor's."""

    name: str | None = None
    agent_mapping: str | None = None
    agents: list[str] | None = None
    custom_field_names: dict[str, str] | None = None
    # Must stay the last field (see CustomerData.json_data).
    customer_data: CustomerData = msgspec.field(default_factory=CustomerData)


class _WireResponse(msgspec.Struct, frozen=True):
    """The answer as sent: ``data`` taken as it comes (null, a list...)."""

    error: bool
    message: str = ""
    data: Any = None


class AppendResponse(msgspec.Struct, frozen=True, kw_only=True):
    """What the API answered to an append.

    Attributes:
        error: the vendor's error flag (False for a success).
        message: the vendor's message, e.g. ``"Processing Campaign..."``.
        data: the vendor's ``data`` object (empty in every documented answer).
    """

    error: bool
    message: str = ""
    data: dict[str, Any] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder()
_request_decoder = msgspec.json.Decoder(AppendRequest)
_response_decoder = msgspec.json.Decoder(_WireResponse)

encode = _encoder.encode
"""Encode a struct, or plain JSON-able values, to compact JSON bytes."""


def decode_request(body: bytes) -> AppendRequest:
    """Decode a request body (raises `msgspec.DecodeError` / `msgspec.ValidationError`)."""
    return _request_decoder.decode(body)


def decode_response(body: bytes) -> AppendResponse:
    """Decode a response body (raises `msgspec.DecodeError` / `msgspec.ValidationError`).

    Only ``error`` is required; a ``data`` that is not an object (null, a list) is kept
    under ``{"value": ...}`` rather than turning a success into an unreadable answer.
    """
    wire = _response_decoder.decode(body)
    data = wire.data
    if not isinstance(data, dict):
        data = {} if data is None else {"value": data}
    return AppendResponse(error=wire.error, message=wire.message, data=data)
