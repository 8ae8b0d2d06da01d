"""scripts/speedrun.py's reading of time to loss: where a curve first reaches the target."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import speedrun  # noqa: E402


def test_seconds_to_target_interpolates_the_first_crossing():
    curve = [(0.0, 9.0), (10.0, 6.0), (20.0, 4.0), (30.0, 5.0), (40.0, 3.0)]
    assert speedrun.seconds_to(curve, 5.0) == 15.0  # halfway from 6.0 at 10 s to 4.0 at 20 s
    assert speedrun.seconds_to(curve, 9.5) == 0.0  # reached before training
    assert speedrun.seconds_to(curve, 2.0) is None  # never reached
    assert speedrun.seconds_to(curve, 4.0) == 20.0


def test_mean_curve_averages_seeds_point_by_point_to_the_shortest():
    a = [(0.0, 8.0), (10.0, 6.0), (20.0, 5.0)]
    b = [(0.0, 6.0), (12.0, 4.0)]
    assert speedrun.mean_curve([a, b]) == [(0.0, 7.0), (11.0, 5.0)]
