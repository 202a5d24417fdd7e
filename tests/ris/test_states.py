"""The order state machine: every (state, event) pair against an independently written IHE SWF table."""

from __future__ import annotations

import itertools

import pytest

from ris_core.states import EVENTS, STATES, InvalidTransition, legal, transition

OR, S, A, IP, CM, RP, F, CA, DC, H = (
    "ORDERED", "SCHEDULED", "ARRIVED", "IN_PROGRESS", "COMPLETED", "REPORTED_PRELIM", "FINALIZED", "CANCELED",
    "DISCONTINUED", "HELD",
)  # fmt: skip

#: What IHE Scheduled Workflow allows, written out by hand (state → {event: next state}).
EXPECTED: dict[str | None, dict[str, str]] = {
    None: {"NW": OR, "NW_SCHEDULED": S},
    OR: {"SCHEDULE": S, "XO": OR, "HOLD": H, "ARRIVE": A, "START": IP, "DISCONTINUE": DC, "CANCEL": CA},
    S: {"SCHEDULE": S, "XO": S, "HOLD": H, "ARRIVE": A, "START": IP, "DISCONTINUE": DC, "CANCEL": CA},
    A: {"XO": A, "HOLD": H, "ARRIVE": A, "START": IP, "DISCONTINUE": DC, "CANCEL": CA},
    H: {"XO": H, "HOLD": H, "RELEASE": S, "DISCONTINUE": DC, "CANCEL": CA},
    IP: {"START": IP, "COMPLETE": CM, "DISCONTINUE": DC, "REPORT_P": RP, "REPORT_F": F},
    CM: {"COMPLETE": CM, "REPORT_P": RP, "REPORT_F": F},
    RP: {"REPORT_P": RP, "REPORT_F": F},
    F: {"REPORT_C": F, "REPORT_F": F},
    CA: {"CANCEL": CA},
    DC: {"DISCONTINUE": DC},
}

PAIRS = list(itertools.product([None, *STATES], EVENTS))


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s}-{e}" for s, e in PAIRS])
def test_every_pair(state: str | None, event: str) -> None:
    """A legal pair gives the expected state; an illegal one raises InvalidTransition naming both states."""
    expected = EXPECTED[state].get(event)
    if expected is not None:
        assert transition(state, event, "ACC1") == expected
        assert legal(state, event)
        return
    assert not legal(state, event)
    with pytest.raises(InvalidTransition) as err:
        transition(state, event, "ACC1")
    assert err.value.state == state and err.value.event == event
    assert "ACC1" in err.value.reason and (state is None or state in err.value.reason)


def test_cancel_after_the_exam_says_unable_to_cancel() -> None:
    """Cancelling an order whose exam started is refused with HL7's "unable to cancel" wording."""
    for state in (IP, CM, RP, F, DC):
        with pytest.raises(InvalidTransition, match="unable to cancel order ACC9"):
            transition(state, "CANCEL", "ACC9")


def test_unknown_event_is_a_programming_error() -> None:
    """An event name that is not in EVENTS is a ValueError, not an illegal transition."""
    with pytest.raises(ValueError, match="unknown order event") as err:
        transition(S, "BOGUS")
    assert not isinstance(err.value, InvalidTransition)
