"""`l4sim bench posix --json`: the shape of its rows (small n, never timing)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from l4sim.cli import main


def test_bench_posix_json_rows() -> None:
    result = CliRunner().invoke(main, ["bench", "posix", "--json", "--n", "20", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    rows = {r["case"]: r for r in data["rows"]}
    assert list(rows) == ["semaphore", "message-queue", "pipe"]
    for r in rows.values():
        assert r["n"] == 20
        assert r["l4sim_us_per_op"] > 0 and r["host_us_per_op"] > 0
        assert r["ratio"] == r["l4sim_us_per_op"] / r["host_us_per_op"]
        assert r["sim_cycles_per_op"] > 0
    assert rows["pipe"]["l4sim_mb_per_s"] > 0 and rows["pipe"]["host_mb_per_s"] > 0
    assert "l4sim_mb_per_s" not in rows["semaphore"]


def test_bench_posix_table() -> None:
    result = CliRunner().invoke(main, ["bench", "posix", "--n", "5", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert "message-queue" in result.output and "write + read 4 KiB" in result.output
