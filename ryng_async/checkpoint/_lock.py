"""One owner at a time: the journal's sidecar lock, its failures worded for the journal.

A load (or `resolve`) owns the journal by an OS advisory lock on ``<path>-lock``
(`ryng_async._sqlite.lock`), which the OS releases when the owner dies.
"""

from __future__ import annotations

from .._sqlite import LockFailedError, LockHeldError, lock, os_reason
from ._format import no_room_error
from ._records import CheckpointRefusedError

__all__ = ["lock_journal"]


def lock_journal(path: str) -> int:
    """Take the journal's lock without waiting; return its descriptor (release: ``unlock``).

    Raises:
        CheckpointRefusedError: another load holds it (its pid named), or it cannot be taken.
        CheckpointError: its lock file cannot be written for lack of room (not a refusal).
    """
    try:
        return lock(path)
    except LockHeldError as held:
        who = f" (pid {held.holder})" if held.holder else ""
        raise CheckpointRefusedError(
            f"the checkpoint journal {path!r} is in use by another load{who}; "
            "wait for it to end, or give this load another checkpoint path"
        ) from None
    except LockFailedError as exc:
        raise CheckpointRefusedError(
            f"cannot lock the checkpoint journal {path!r} ({exc.filename!r}): {os_reason(exc)}"
        ) from exc
    except OSError as exc:
        full = no_room_error(path, exc, f"the lock file {exc.filename!r} of the journal {path!r}")
        if full is not None:
            raise full from exc
        raise CheckpointRefusedError(
            f"cannot use {path!r} as a checkpoint journal: cannot create its lock file "
            f"{path + '-lock'!r}: {os_reason(exc)}"
        ) from exc
