"""What a campaign added, with its interval: a control that accepted nothing is not a certainty."""

from __future__ import annotations

from serving.console import incremental


def test_a_control_without_an_acceptance_still_leaves_the_estimate_uncertain():
    """40 of the model arm's members contacted, 10 accepted; 8 controls, none accepted. Read as rates,
    the control's variance is 0 x 1 / 8 = 0 and the interval would be the treated arm's alone."""
    got = incremental(treated=40, treated_accepted=10, control=8, control_accepted=0)
    assert got["estimate"] == 10.0
    treated_alone = 1.96 * 40 * (0.25 * 0.75 / 40) ** 0.5  # what the plain normal approximation gives: 5.4
    assert got["high"] - got["estimate"] > 1.5 * treated_alone  # the control's 8 members count for doubt


def test_no_estimate_without_both_arms():
    assert incremental(treated=0, treated_accepted=0, control=10, control_accepted=1) is None
    assert incremental(treated=10, treated_accepted=1, control=0, control_accepted=0) is None
