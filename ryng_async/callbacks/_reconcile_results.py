"""What a reconciliation reports: a `LeadStatus` line per lead, and a `ReconcileSummary`."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final, Literal, TypeAlias

import msgspec

__all__ = ["COLUMNS", "LeadStatus", "LoadOutcome", "ReconcileSummary", "Status"]


class Status(enum.StrEnum):
    """What became of one lead."""

    ENDED = "ended"
    """Appended, called, and the call ended: a terminal callback matched."""
    CONNECTED = "connected"
    """Appended and a connect callback matched, but no terminal callback yet."""
    AWAITING = "awaiting"
    """Appended, no callback yet (within the deadline, or no deadline given)."""
    OVERDUE = "overdue"
    """Appended, and still no callback after the deadline."""
    AMBIGUOUS = "ambiguous"
    """Callbacks came for its key, but other leads that may have been appended share it."""
    NO_KEY = "no_key"
    """Appended, but the lead has no value for the key, so no callback can match it."""
    FAILED = "failed"
    """Its batch failed at load time: not appended."""
    FAILED_CALLED = "failed_called"
    """Its batch failed at load time, yet a callback carries its key: the batch may have
    reached Ryng after all. Ask Ryng before loading it again (a second load calls twice)."""
    UNKNOWN = "unknown"
    """Its batch's fate is unknown (timeout, drop) and no callback has shown it appended."""
    SKIPPED = "skipped"
    """Read but never sent (the load was cancelled, aborted or stopped)."""
    INVALID = "invalid"
    """Refused by validation before sending."""
    NOT_READ = "not_read"
    """Past the point where the load stopped reading its input."""


# Load outcomes, as a lead's ``load``; "not_read" for positions past the report's total.
LoadOutcome: TypeAlias = Literal["accepted", "failed", "unknown", "skipped", "invalid", "not_read"]


class LeadStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One lead's line in a reconciliation.

    Attributes:
        position: the lead's input position (0 for the first lead).
        key: the lead's value for the matching key, or None.
        number: the lead's number.
        load: its outcome at load time: accepted, failed, unknown, skipped, invalid, or
            not_read.
        batch: the index of its batch, or None (invalid, not read).
        status: what became of it (`Status`).
        leads_with_key: leads that may have been appended and share its key (1: unique).
        calls: distinct calls (callIDs) whose callbacks carry its key.
        call_id: the matched call (the terminal one if any, else the last connected).
        last_event: that call's last event, e.g. ``"call-ended"``.
        disposition: the terminal callback's disposition.
        talktime: talk time in seconds.
        call_ended: when the call ended.
        recording_url: the call recording.
        agent_username: the agent who took the call.
    """

    position: int
    key: str | None
    number: str | None
    load: str
    batch: int | None
    status: Status
    leads_with_key: int = 0
    calls: int = 0
    call_id: int | None = None
    last_event: str | None = None
    disposition: str | None = None
    talktime: int | None = None
    call_ended: datetime | None = None
    recording_url: str | None = None
    agent_username: str | None = None


COLUMNS: Final = tuple(LeadStatus.__struct_fields__)


class ReconcileSummary(msgspec.Struct, kw_only=True):
    """Counts over a whole reconciliation.

    Attributes:
        key: the matching key.
        leads: leads read.
        by_status: leads per `Status` value.
        by_load: leads per load outcome.
        ambiguous_keys: distinct keys shared by several leads and carried by callbacks.
        callbacks: callbacks read from the store.
        callbacks_without_key: callbacks carrying no value for the key.
        unmatched_calls: distinct calls whose key matches no lead that may have been
            appended (another load's, or a key typed differently).
        calls_on_failed_leads: distinct calls whose key matches only leads of failed
            batches (`Status.FAILED_CALLED`): those batches may have reached Ryng.
        report_total: the report's ``total``, to compare with ``leads``.
    """

    key: str
    leads: int = 0
    by_status: dict[str, int] = msgspec.field(default_factory=dict)
    by_load: dict[str, int] = msgspec.field(default_factory=dict)
    ambiguous_keys: int = 0
    callbacks: int = 0
    callbacks_without_key: int = 0
    unmatched_calls: int = 0
    calls_on_failed_leads: int = 0
    report_total: int = 0

    def table(self) -> str:
        """Return the counts as a small plain-text table."""
        lines = [f"{'status':<13} {'leads':>10}", f"{'-' * 13} {'-' * 10}"]
        for status in Status:
            count = self.by_status.get(status.value, 0)
            if count:
                lines.append(f"{status.value:<13} {count:>10,}")
        lines.append(f"{'total':<13} {self.leads:>10,}")
        notes = [f"matched by {self.key}; {_counted(self.callbacks, 'callback')} read"]
        if self.ambiguous_keys:
            shared = self.by_status.get("ambiguous", 0)
            notes.append(
                f"{_counted(self.ambiguous_keys, 'key')} "
                f"{_verb(self.ambiguous_keys, 'is', 'are')} shared by several leads: "
                f"{_counted(shared, 'lead')} cannot be told apart"
            )
        if self.unmatched_calls:
            notes.append(
                f"{_counted(self.unmatched_calls, 'call')} "
                f"{_verb(self.unmatched_calls, 'matches', 'match')} no lead of this load"
            )
        if self.calls_on_failed_leads:
            failed = self.by_status.get("failed_called", 0)
            notes.append(
                f"{_counted(self.calls_on_failed_leads, 'call')} "
                f"{_verb(self.calls_on_failed_leads, 'matches', 'match')} "
                f"{_counted(failed, 'lead')} of failed batches: those batches may have "
                "reached Ryng after all; ask Ryng before loading them again"
            )
        if self.callbacks_without_key:
            notes.append(
                f"{_counted(self.callbacks_without_key, 'callback')} "
                f"{_verb(self.callbacks_without_key, 'carries', 'carry')} no {self.key}"
            )
        if self.report_total != self.leads:
            notes.append(
                f"the report counts {_counted(self.report_total, 'lead')} read, "
                f"the input has {self.leads:,}"
            )
        return "\n".join(lines + notes)


def _counted(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _verb(count: int, singular: str, plural: str) -> str:
    return singular if count == 1 else plural


# -- the load's record -------------------------------------------------------------------
