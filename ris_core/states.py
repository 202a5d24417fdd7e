"""The order state machine of IHE Scheduled Workflow, as a table (DESIGN.md §3.8, pynetdicom ``fsm.py``).

``TRANSITIONS[(state, event)] -> state``; a pair that is not in the table is illegal:
:func:`transition` raises :class:`InvalidTransition` (naming both states) and the caller changes
nothing. ``None`` is the state of an order that does not exist yet. Repeating an event that
already took effect (a second image, a resent arrival) is a self-transition, so duplicates are
harmless.

Events and where they come from:

=================  ==========================================================================
``NW``             ORC-1 NW without a schedule (the order waits to be scheduled)
``NW_SCHEDULED``   ORC-1 NW with a start time (TQ1-7, ORC-7.4, OBR-27.4), or internal scheduling
``SCHEDULE``       an ORDERED order gets its schedule (ORC-1 SC / XO with a start time)
``XO``             ORC-1 XO: order changed (the scheduled steps are replaced)
``HOLD``           ORC-1 HD;  ``RELEASE``: ORC-1 RL
``ARRIVE``         ADT^A10 patient arrived
``START``          MPPS N-CREATE IN PROGRESS, or the first image of the study (RAD-6, RAD-8)
``COMPLETE``       MPPS N-SET COMPLETED (RAD-7), or the study-stable timeout
``DISCONTINUE``    MPPS N-SET DISCONTINUED, or ORC-1 DC
``CANCEL``         ORC-1 CA (only before the exam: after it the RIS answers "unable to cancel")
``REPORT_P``       ORU^R01 with OBR-25 P;  ``REPORT_F``: F;  ``REPORT_C``: C (a corrected final).
                   A preliminary after the final is refused; a final after the final is a new version.
=================  ==========================================================================
"""

from __future__ import annotations

ORDERED = "ORDERED"
SCHEDULED = "SCHEDULED"
ARRIVED = "ARRIVED"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
REPORTED_PRELIM = "REPORTED_PRELIM"
FINALIZED = "FINALIZED"
CANCELED = "CANCELED"
DISCONTINUED = "DISCONTINUED"
HELD = "HELD"

STATES = (ORDERED, SCHEDULED, ARRIVED, IN_PROGRESS, COMPLETED, REPORTED_PRELIM, FINALIZED, CANCELED, DISCONTINUED, HELD)
EVENTS = (
    "NW", "NW_SCHEDULED", "SCHEDULE", "XO", "HOLD", "RELEASE", "ARRIVE", "START", "COMPLETE", "DISCONTINUE",
    "CANCEL", "REPORT_P", "REPORT_F", "REPORT_C",
)  # fmt: skip

BEFORE_EXAM = (ORDERED, SCHEDULED, ARRIVED, HELD)  # the exam has not started: an order can still change
EXAM_DONE = (COMPLETED, REPORTED_PRELIM, FINALIZED)
FINAL = (FINALIZED, CANCELED, DISCONTINUED)  # nothing but a correction (FINALIZED) or a repeat follows


def _table() -> dict[tuple[str | None, str], str]:
    t: dict[tuple[str | None, str], str] = {
        (None, "NW"): ORDERED,
        (None, "NW_SCHEDULED"): SCHEDULED,
        (ORDERED, "SCHEDULE"): SCHEDULED,
        (SCHEDULED, "SCHEDULE"): SCHEDULED,
        (HELD, "RELEASE"): SCHEDULED,
        (SCHEDULED, "START"): IN_PROGRESS,
        (ARRIVED, "START"): IN_PROGRESS,
        (ORDERED, "START"): IN_PROGRESS,  # an unscheduled exam of a known order
        (IN_PROGRESS, "START"): IN_PROGRESS,
        (IN_PROGRESS, "COMPLETE"): COMPLETED,
        (COMPLETED, "COMPLETE"): COMPLETED,
        (IN_PROGRESS, "DISCONTINUE"): DISCONTINUED,
        (DISCONTINUED, "DISCONTINUE"): DISCONTINUED,
        (CANCELED, "CANCEL"): CANCELED,
        (REPORTED_PRELIM, "REPORT_P"): REPORTED_PRELIM,
        (FINALIZED, "REPORT_C"): FINALIZED,
        (FINALIZED, "REPORT_F"): FINALIZED,  # a final sent again (new MSH-10): kept as a new version
    }
    for state in BEFORE_EXAM:
        t[(state, "XO")] = state
        t[(state, "CANCEL")] = CANCELED
        t[(state, "DISCONTINUE")] = DISCONTINUED
        if state != HELD:
            t[(state, "HOLD")] = HELD
            t[(state, "ARRIVE")] = ARRIVED
    t[(HELD, "HOLD")] = HELD
    for state in (IN_PROGRESS, COMPLETED):
        t[(state, "REPORT_P")] = REPORTED_PRELIM
        t[(state, "REPORT_F")] = FINALIZED
    t[(REPORTED_PRELIM, "REPORT_F")] = FINALIZED
    return t


TRANSITIONS: dict[tuple[str | None, str], str] = _table()

#: DICOM Scheduled Procedure Step Status (0040,0020) of an order's steps in each order state.
SPS_STATUS: dict[str, str] = {
    ORDERED: "SCHEDULED",
    SCHEDULED: "SCHEDULED",
    ARRIVED: "ARRIVED",
    HELD: "SCHEDULED",  # held orders are not offered on the worklist (see OPEN_ON_WORKLIST)
    IN_PROGRESS: "STARTED",
    COMPLETED: "COMPLETED",
    REPORTED_PRELIM: "COMPLETED",
    FINALIZED: "COMPLETED",
    CANCELED: "CANCELED",
    DISCONTINUED: "DISCONTINUED",
}

#: Order states whose steps a Modality Worklist query returns when it does not ask for a status.
OPEN_ON_WORKLIST = (ORDERED, SCHEDULED, ARRIVED, IN_PROGRESS)

#: HL7 ORC-5 order status sent back to the placer for each state (HL7 table 0038).
ORC5: dict[str, str] = {
    ORDERED: "SC",
    SCHEDULED: "SC",
    ARRIVED: "SC",
    HELD: "HD",
    IN_PROGRESS: "IP",
    COMPLETED: "CM",
    REPORTED_PRELIM: "CM",
    FINALIZED: "CM",
    CANCELED: "CA",
    DISCONTINUED: "DC",
}


class InvalidTransition(ValueError):
    """An event that is not allowed in the order's current state; nothing was changed."""

    def __init__(self, state: str | None, event: str, order: str = "") -> None:
        self.state, self.event, self.order = state, event, order
        what = f"order {order}" if order else "the order"
        if event == "CANCEL" and state not in BEFORE_EXAM:
            reason = f"unable to cancel {what}: it is {state} (the exam has started)"
        elif state is None:
            reason = f"{what} does not exist ({event} needs an existing order)"
        else:
            reason = f"{event} is not allowed for {what} in state {state}"
        super().__init__(reason)
        self.reason = reason


def transition(state: str | None, event: str, order: str = "") -> str:
    """The state after *event* in *state*; raises :class:`InvalidTransition` for an illegal pair."""
    if event not in EVENTS:
        raise ValueError(f"unknown order event {event!r}")
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event, order) from None


def legal(state: str | None, event: str) -> bool:
    """Whether *event* may happen in *state*."""
    return (state, event) in TRANSITIONS
