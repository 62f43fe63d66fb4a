"""The state machine of DESIGN.md, in one table."""

from __future__ import annotations

import pytest

from lg_deploy.core.errors import InvalidTransition
from lg_deploy.core.states import TERMINAL, TRANSITIONS, Status, check_transition, sources_of

ALLOWED = {
    (Status.QUEUED, Status.RUNNING),
    (Status.QUEUED, Status.CANCELLED),
    (Status.RUNNING, Status.COMPLETED),
    (Status.RUNNING, Status.FAILED),
    (Status.RUNNING, Status.CANCELLED),
    (Status.RUNNING, Status.INTERRUPTED),
    (Status.RUNNING, Status.QUEUED),
    (Status.INTERRUPTED, Status.QUEUED),
    (Status.INTERRUPTED, Status.CANCELLED),
}


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("wanted", list(Status))
def test_only_the_documented_moves_are_allowed(current: Status, wanted: Status) -> None:
    """check_transition accepts exactly the moves of the documented state machine."""
    if (current, wanted) in ALLOWED:
        check_transition(current, wanted)
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition(current, wanted)
        assert (info.value.current, info.value.wanted) == (current, wanted)


def test_terminal_states_have_no_way_out() -> None:
    """COMPLETED, FAILED and CANCELLED are terminal: nothing leaves them."""
    assert {Status.COMPLETED, Status.FAILED, Status.CANCELLED} == TERMINAL
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_sources_of_inverts_the_table() -> None:
    """sources_of(x) is every status with a move to x."""
    assert sources_of(Status.QUEUED) == {Status.RUNNING, Status.INTERRUPTED}
    assert sources_of(Status.CANCELLED) == {Status.QUEUED, Status.RUNNING, Status.INTERRUPTED}
    assert sources_of(Status.RUNNING) == {Status.QUEUED}
