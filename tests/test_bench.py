"""`l4sim bench pingpong` and `l4sim bench scale` (S17, S21), run through the click group
with tiny sizes: the shape of the JSON, positive and mutually consistent figures, and
the simulated cycles, which are deterministic. No assertion about wall-clock speed:
timing belongs in the benchmarks, never in tests.
"""

from __future__ import annotations

import inspect
import json
import math
from typing import Any

import pytest
from click.testing import CliRunner

from l4sim.bench import CASES, run_floor
from l4sim.bench.cli import bench
from l4sim.bench.floor import ShapeContext, run_shaped_floor
from l4sim.user import UserContext

ROW_KEYS = {"case", "ns_per_rt", "rt_per_s", "ratio_to_floor", "sim_cycles_per_rt"}
SCALE_KEYS = {"threads", "ns_per_rt", "two_thread_ns_per_rt", "ratio_to_two_threads",
              "bytes_per_blocked_thread"}


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(bench, list(args))
    assert result.exit_code == 0, result.output
    return result


def bench_json(*args: str) -> Any:
    return json.loads(invoke(*args, "--json").stdout)


@pytest.fixture(scope="module")
def pingpong() -> Any:
    return bench_json("pingpong", "--n", "300", "--repeats", "2")


def speed_rows(pingpong: Any) -> list[Any]:
    return [r for r in pingpong["rows"] if r["section"] == "emulator"]


def test_pingpong_json_has_every_case(pingpong: Any) -> None:
    assert [r["case"] for r in speed_rows(pingpong)] == [
        "register-same-space", "register-cross-space", "register-cross-cpu",
        "register-same-cpu-of-two", "utcb-8-same-space", "utcb-63-cross-space",
        "string-4k-window", "string-4k-kernel-buffer", "string-1m-window",
        "general-register", "timeouts-both", "string-4k-mapped"]
    assert [c.name for c in CASES] == [r["case"] for r in speed_rows(pingpong)]
    assert speed_rows(pingpong) == pingpong["speed_rows"]
    assert pingpong["n"] == 300
    for r in speed_rows(pingpong):
        assert set(r) >= ROW_KEYS


def test_string_rows_report_bytes_and_throughput(pingpong: Any) -> None:
    rows = {r["case"]: r for r in speed_rows(pingpong)}
    for case, size, copy in (("string-4k-window", 4096, "window"),
                             ("string-4k-kernel-buffer", 4096, "kernel-buffer"),
                             ("string-1m-window", 1 << 20, "window")):
        r = rows[case]
        assert r["string_bytes"] == size and r["copy"] == copy
        assert r["gb_per_s"] == pytest.approx(size / r["ns_per_rt"])
    # the simulated cost: two copies cost more than one, a MiB more than 4 KiB
    sim = {case: r["sim_cycles_per_rt"] for case, r in rows.items()}
    assert sim["string-4k-kernel-buffer"] > sim["string-4k-window"]
    assert sim["string-1m-window"] > 100 * sim["string-4k-window"]


def test_model_predicts_string_ipc_by_both_copy_strategies(pingpong: Any) -> None:
    strings = [r for r in pingpong["model_rows"] if "string_bytes" in r]
    assert [(r["copy"], r["string_bytes"]) for r in strings] == [
        (c, n) for c in ("window", "kernel-buffer") for n in (4096, 16384, 65536, 262144, 1 << 20)]
    by = {(r["copy"], r["string_bytes"]): r["sim_cycles_per_rt"] for r in strings}
    for n in (4096, 16384, 65536, 262144, 1 << 20):
        assert by["kernel-buffer", n] > by["window", n]
    # per byte, the copy dominates at 1 MiB: the model's rates (0.5 and 1.0 cycles/byte)
    win = by["window", 1 << 20] - by["window", 4096]
    kb = by["kernel-buffer", 1 << 20] - by["kernel-buffer", 4096]
    assert win / ((1 << 20) - 4096) == pytest.approx(0.5, rel=0.02)
    assert kb / ((1 << 20) - 4096) == pytest.approx(1.0, rel=0.02)


def test_pingpong_json_has_the_model_rows_first(pingpong: Any) -> None:
    """`rows` holds the lecture's six configurations, then the predictions, then the speed
    rows; every row has a case and simulated cycles, the lecture rows the lecture's figure."""
    model = pingpong["model_rows"]
    assert pingpong["rows"] == model + pingpong["speed_rows"]
    sections = [r["section"] for r in model]
    assert sections == ["lecture"] * 6 + ["prediction"] * (len(model) - 6)
    for r in pingpong["rows"]:
        assert {"case", "section", "sim_cycles_per_rt"} <= set(r)
        assert ("lecture_cycles_per_rt" in r) == (r["section"] == "lecture")
    for r in model[:6]:
        assert abs(r["sim_cycles_per_rt"] - r["lecture_cycles_per_rt"]) \
            <= 0.05 * r["lecture_cycles_per_rt"]
    assert len({r["case"] for r in pingpong["rows"]}) == len(pingpong["rows"])


def test_pingpong_figures_are_positive_and_consistent(pingpong: Any) -> None:
    floor = pingpong["floor_ns_per_rt"]
    assert floor > 0
    for r in speed_rows(pingpong):
        ns = r["ns_per_rt"]
        assert ns > 0
        assert math.isclose(r["rt_per_s"], 1e9 / ns, rel_tol=1e-9)
        assert math.isclose(r["ratio_to_floor"], ns / floor, rel_tol=1e-9)
        assert math.isclose(r["ratio_to_warm_floor"], ns / pingpong["floor_warm_ns_per_rt"],
                            rel_tol=1e-9)
        assert math.isclose(r["ratio_to_shaped_floor"],
                            ns / pingpong["shaped_floor_ns_per_rt"], rel_tol=1e-9)
        assert r["ns_min"] <= ns <= r["ns_max"]


def test_pingpong_simulated_cycles(pingpong: Any) -> None:
    """Simulated time is deterministic: a round trip costs a whole number of cycles, a
    second address space and UTCB words cost more than registers in one space."""
    sim = {r["case"]: r["sim_cycles_per_rt"] for r in speed_rows(pingpong)}
    for cycles in sim.values():
        assert cycles > 0 and cycles == int(cycles)
    assert sim["register-cross-space"] > sim["register-same-space"]
    assert sim["utcb-8-same-space"] > sim["register-same-space"]
    assert sim["utcb-63-cross-space"] > sim["register-cross-space"]
    # the general path and unexpired timeouts cost the same simulated time as the fast path
    assert sim["general-register"] == sim["timeouts-both"] == sim["register-same-space"]
    assert sim["string-4k-mapped"] == sim["string-4k-window"]


def test_pingpong_table_and_progress() -> None:
    result = invoke("pingpong", "--n", "100", "--repeats", "1")
    for case in CASES:
        assert case.name in result.stdout
    assert "floor" in result.stdout
    assert "Cost model vs the lecture" in result.stdout and "1,962" in result.stdout
    assert "utcb-63-cross-space-sysenter" in result.stdout  # a prediction
    assert "register-same-space" in result.stderr  # progress goes to stderr


def test_pingpong_quick_uses_a_tenth() -> None:
    # --n wins over --quick; --quick alone means 20,000 round trips (too slow for a test).
    assert bench_json("pingpong", "--quick", "--n", "50", "--repeats", "1")["n"] == 50


def test_floor_runs_round_trips() -> None:
    assert run_floor(100) > 0


def test_the_shaped_floor_is_entered_as_l4sims_system_calls_are() -> None:
    """Its round trips deliver (it raises on a lost message), and its `call`, `wait` and
    `reply_and_wait` take the parameters of l4sim's, in the same order."""
    assert run_shaped_floor(100) > 0
    for name in ("call", "wait", "reply_and_wait"):
        ours = list(inspect.signature(getattr(UserContext, name)).parameters)[1:]
        shaped = list(inspect.signature(getattr(ShapeContext, name)).parameters)[1:]
        assert shaped == ours, name


@pytest.mark.parametrize("kind", ["mixed", "send", "wait"])
def test_scale_json(kind: str, pingpong: Any) -> None:
    data = bench_json("scale", "--threads", "200", "--n", "200", "--repeats", "1",
                      "--kind", kind)
    assert set(data) >= SCALE_KEYS
    assert data["threads"] == 200
    assert data["kind"] == kind
    for key in SCALE_KEYS - {"threads"}:
        assert data[key] > 0, key
    assert math.isclose(data["ratio_to_two_threads"],
                        data["ns_per_rt"] / data["two_thread_ns_per_rt"], rel_tol=1e-9)
    assert math.isclose(data["loop_ratio_to_two_threads"],
                        data["loop_ns_per_rt"] / data["two_thread_loop_ns_per_rt"], rel_tol=1e-9)
    # a crowd of blocked threads does not change the simulated round trip
    same_space = next(r for r in pingpong["rows"] if r["case"] == "register-same-space")
    assert data["sim_cycles_per_rt"] == same_space["sim_cycles_per_rt"]


def test_scale_table() -> None:
    result = invoke("scale", "--threads", "50", "--n", "50", "--repeats", "1")
    assert "bytes per blocked thread" in result.stdout
    assert "blocked" in result.stderr


def test_pingpong_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """--plot needs the optional extra; without it the command says so, before measuring."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out = tmp_path / "rt.png"
    result = CliRunner().invoke(bench, ["pingpong", "--n", "10", "--repeats", "1",
                                        "--plot", str(out)])
    assert result.exit_code == 1
    assert "--plot needs matplotlib" in result.output
    assert "pip install 'l4sim[plot]'" in result.output
    assert not out.exists()


def test_bad_options_are_refused() -> None:
    runner = CliRunner()
    assert runner.invoke(bench, ["pingpong", "--n", "0"]).exit_code == 2
    assert runner.invoke(bench, ["scale", "--threads", "0"]).exit_code == 2
    assert runner.invoke(bench, ["scale", "--kind", "nope"]).exit_code == 2


def test_cross_cpu_round_trips_cost_two_ipis(pingpong: Any) -> None:
    """Across CPUs each direction waits for an IPI: the model predicts it, and the
    emulator's row simulates the same round trip (register IPC, two address spaces)."""
    from l4sim.kernel.costs import PROFILES

    rows = {r["case"]: r for r in pingpong["rows"]}
    for entry, prof in (("sysenter", PROFILES["core2-sysenter"]), ("int30", PROFILES["core2-int30"])):
        cross_cpu = rows[f"register-cross-cpu-{entry}"]["sim_cycles_per_rt"]
        one_cpu = rows[f"register-cross-space-{entry}"]["sim_cycles_per_rt"]
        assert cross_cpu == 2 * (prof.ipc_cost(2) + prof.ipi)
        assert cross_cpu > one_cpu
    assert rows["register-cross-cpu"]["sim_cycles_per_rt"] == \
        rows["register-cross-cpu-sysenter"]["sim_cycles_per_rt"]


def test_a_second_idle_cpu_changes_no_simulated_time(pingpong: Any) -> None:
    """`register-same-cpu-of-two`: the ping-pong of `register-same-space` on a kernel of
    two CPUs, the second idle. It takes the general path (as every IPC with several CPUs
    does) and steps CPU by CPU, but simulates the same round trip."""
    rows = {r["case"]: r for r in speed_rows(pingpong)}
    assert rows["register-same-cpu-of-two"]["sim_cycles_per_rt"] == \
        rows["register-same-space"]["sim_cycles_per_rt"]


def test_check_json() -> None:
    data = bench_json("check", "--n", "100", "--repeats", "1")
    assert {"checked_ns_per_rt", "unchecked_ns_per_rt", "ratio", "full_checked_ns_per_rt"} <= set(data)
    assert math.isclose(data["ratio"], data["checked_ns_per_rt"] / data["unchecked_ns_per_rt"],
                        rel_tol=1e-9)
    assert data["checked_ns_per_rt"] > 0 and data["unchecked_ns_per_rt"] > 0


def test_check_table() -> None:
    result = invoke("check", "--n", "50", "--repeats", "1")
    assert "check=True" in result.stdout and "full" in result.stdout


def test_bytecodes_are_counted_deterministically() -> None:
    """`l4sim bench bytecodes` counts the same bytecodes for the same code on every run
    (unlike a timing), in all and by function."""
    args = ("bytecodes", "--case", "register-same-space", "--case", "general-register",
            "--round-trips", "40")
    first, second = bench_json(*args), bench_json(*args)
    assert first == second
    rows = {r["case"]: r for r in first["rows"]}
    assert list(rows) == ["register-same-space", "general-register"]
    for r in rows.values():
        assert r["bytecodes_per_rt"] == sum(r["by_function"].values()) > 0
    fast = rows["register-same-space"]["by_function"]
    general = rows["general-register"]["by_function"]
    assert "fastpath.py:call" in fast and "fastpath.py:call" not in general
    assert "ipc.py:_ipc" in general and "ipc.py:_ipc" not in fast
    assert rows["general-register"]["bytecodes_per_rt"] > rows["register-same-space"]["bytecodes_per_rt"]


def test_bytecodes_table_and_a_bad_case() -> None:
    result = invoke("bytecodes", "--case", "timeouts-both", "--round-trips", "20", "--top", "2")
    assert "timeouts-both" in result.stdout and "bytecodes/rt" in result.stdout
    bad = CliRunner().invoke(bench, ["bytecodes", "--case", "no-such-case"])
    assert bad.exit_code != 0 and "no-such-case" in bad.output
