"""`l4sim run --cpus N --seed S` prints the schedule of a racy run; `--schedule` replays
it exactly, and a schedule that does not fit the program is a clear error."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from l4sim.cli import main

RACE = '''
"""Four clients on four CPUs race to call one server; the order is the race's outcome."""
ORDER = []


async def server(t):
    r = await t.wait()
    while True:
        ORDER.append(r.label)
        r = await t.reply_and_wait()


async def client(t, gate):
    await t.call(gate)


def build(k):
    s = k.new_task("s").new_thread(server, name="srv", cpu=0)
    for i in range(len(k.cpus)):
        ct = k.new_task(f"c{i}")
        ct.new_thread(client, ct.add_cap(k.new_gate(s, label=i)), name=f"c{i}", cpu=i)


def report(k, result):
    print("order:", ORDER)
'''


def _run(path: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, ["run", str(path), *args])
    return res.exit_code, res.output


def test_a_racy_run_prints_its_schedule_and_replays_it(tmp_path: Path) -> None:
    race = tmp_path / "race.py"
    race.write_text(RACE)
    outcomes = {}
    for seed in range(6):
        code, out = _run(race, "--cpus", "4", "--seed", str(seed), "--check")
        assert code == 0, out
        order = re.search(r"order: (\[.*\])", out)
        sched = re.search(r"schedule: (.*?)  \(replay it", out)
        assert order and sched
        outcomes[seed] = (order.group(1), sched.group(1))
    assert len({o for o, _ in outcomes.values()}) > 1  # the seed decides the race
    for order, sched in outcomes.values():
        code, out = _run(race, "--cpus", "4", "--seed", "99", "--schedule", sched)
        assert code == 0, out
        assert f"order: {order}" in out


def test_a_schedule_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    race = tmp_path / "race.py"
    race.write_text(RACE)
    code, out = _run(race, "--cpus", "4", "--schedule", "c0")
    assert code != 0 and "the schedule has 1 choices, but the program makes more" in out
    code, out = _run(race, "--cpus", "4", "--schedule", "q1")
    assert code != 0 and "unknown choice point 'q'" in out
