"""`l4sim bench explore`: its figures exist and hang together (speed itself is for the
benchmark to measure, not for a test)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from l4sim.bench.explore import run_explore
from l4sim.cli import main


def test_bench_explore_figures() -> None:
    out = run_explore(jobs=2, bound=0, small=(2, 2), small_bound=3)
    for key in ("unchecked_jobs1", "unchecked_jobs2", "checked_jobs1", "checked_jobs2"):
        row = out[key]
        # Bound 0: the one schedule of the policy, the same in every configuration.
        assert (row["schedules"], row["failures"]) == (1, 0)
        assert row["choice_points"] == out["unchecked_jobs1"]["choice_points"] > 100
        assert row["schedules_per_s"] > 0
    red = out["reduction"]
    assert red["schedules_reduced"] < red["schedules_plain"]
    assert red["same_end_states"] and red["end_states_plain"] == red["end_states_reduced"]
    assert red["saved"] == red["schedules_plain"] - red["schedules_reduced"]


def test_bench_explore_command_prints_json() -> None:
    res = CliRunner().invoke(main, ["bench", "explore", "--bound", "0", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output[res.output.index("{"):])
    assert data["scenario"]["threads"] == 10 and "reduction" in data
