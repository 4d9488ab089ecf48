"""`l4sim fuzz`: a short campaign runs clean, every oracle fires on a planted fault,
shrinking keeps the anomaly and yields a runnable standalone program, and the command's
JSON output says what it did."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from l4sim import Fpage, Kernel, KernelInvariantError, MapItem, Rights, Timeout
from l4sim.cli import main
from l4sim.explore import fuzz
from l4sim.explore.fuzz import (
    FuzzRuntime,
    campaign,
    check_build,
    check_program,
    compile_program,
    hashseed_digests,
    other_hashseed,
    program_of,
    shrink,
    traced_digest,
)
from l4sim.explore.fuzz_gen import SECRET_ADDR, generate, render
from l4sim.kernel import ipc as kipc
from l4sim.user.context import UserContext

RUN = {"until": 5_000_000, "max_steps": None}


def kinds(report: Any) -> set[str]:
    return {a.kind for a in report.anomalies}


# --- a short campaign ------------------------------------------------------------------

def test_short_campaign_is_clean_and_makes_many_system_calls() -> None:
    s = campaign(seed_start=100, seeds=100, jobs=1, hashseed=True)
    assert [a.as_dict() for a in s.anomalies] == []
    assert s.seeds == 100 and s.runs == 3 * 100
    assert s.system_calls > 5_000          # kernel entries of the checked runs alone
    assert s.entries_all > 2 * s.system_calls
    assert s.hashseed_checked == 2          # seeds 100 and 150 re-run elsewhere
    # The systems vary in shape: several task and thread counts, including the extremes.
    assert {2, 6} <= set(s.shapes["tasks"]) and {2, 10} <= set(s.shapes["threads"])


def test_generation_is_a_function_of_the_seed() -> None:
    assert generate(7) == generate(7)
    assert render(generate(7)) == render(generate(7))
    assert generate(7) != generate(8)
    for seed in range(30):
        p = generate(seed)
        assert 2 <= len(p.tasks) <= 6 and 2 <= len(p.threads) <= 10
        assert p.until is not None or p.max_steps is not None  # every run is bounded


def test_the_host_moves_threads_between_cpus() -> None:
    """Programs on several CPUs get host events that move threads, and threads that move
    others by `ex_regs`; the runtime moves a thread only when the API allows it (not one
    that ended or is running), and a move that lands while the thread waits, is queued
    or computes is checked like any other event."""
    multi = [generate(seed, 2) for seed in range(200)]
    moves = [e for p in multi for e in p.events if e.action == "migrate"]
    assert len(moves) > 50
    assert {e.cpu for e in moves} == {0, 1} and {e.kind for e in moves} == {"thread"}
    for p in multi:
        if any(e.action == "migrate" for e in p.events):
            src = render(p)
            e = next(e for e in p.events if e.action == "migrate")
            assert f'rt.host("migrate", th{e.target}, {e.cpu})' in src
            break
    one = [generate(seed, 1) for seed in range(50)]
    assert not [e for p in one for e in p.events if e.action == "migrate"]
    # Threads move each other too (`ex_regs` with `cpu=`, sometimes to a CPU that is not).
    regs = [dict(op.kwargs).get("cpu") for p in multi for th in p.threads for op in th.ops
            if op.name == "ex_regs"]
    assert {0, 1, 2} <= set(regs) and None in regs
    # A short campaign over programs with moves runs clean.
    seeds = [seed for seed, p in enumerate(multi) if any(e.action == "migrate" for e in p.events)]
    for seed in seeds[:25]:
        report = check_program(generate(seed, 2))
        assert [a.as_dict() for a in report.anomalies] == []


def test_the_fast_path_is_exercised() -> None:
    """Runs without a step limit leave the fast path on in the third run."""
    progs = [program_of(s) for s in range(20)]
    assert sum(p.max_steps is None for p in progs) >= 10
    k = Kernel()
    assert k.fastpath


# --- every oracle fires on a planted fault -------------------------------------------------

def _two_threads(server_body: Any, client_body: Any, rights: int = 0xF) -> Any:
    def build(k: Kernel, rt: FuzzRuntime) -> None:
        s_task, c_task = k.new_task("s"), k.new_task("c")
        rt.secret_owner(s_task)
        rt.secret_owner(c_task)

        async def server(t: UserContext) -> None:
            await server_body(rt.ctx(t))

        async def client(t: UserContext) -> None:
            await client_body(rt.ctx(t), sel)

        srv = s_task.new_thread(server, name="server", priority=120)
        c_task.new_thread(client, name="client", priority=100)
        sel = c_task.add_cap(srv, rights)

    return build


async def _serve(x: Any) -> None:
    await x.wait(receive_timeout=Timeout.us(50))
    await x.reply(words=[7])


async def _call(x: Any, sel: int) -> None:
    await x.call(sel, words=[1], receive_timeout=Timeout.us(80))


def test_a_clean_hand_written_system_has_no_anomaly() -> None:
    rep = check_build(_two_threads(_serve, _call), {}, RUN, 0)
    assert rep.anomalies == [] and rep.runs == 3 and rep.entries >= 3


def test_oracle_invariant(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def broken(k: Kernel, incoming: Any = None, blocking: Any = None) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise KernelInvariantError("planted", "a fault planted by the test")

    monkeypatch.setattr(Kernel, "check_invariants", broken)
    rep = check_build(_two_threads(_serve, _call), {}, RUN, 0)
    assert "invariant" in kinds(rep)
    assert any(a.key == "planted" for a in rep.anomalies)


def test_oracle_kernel_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(th: Any, sel: int) -> Any:
        raise IndexError("planted in the kernel's handshake")

    monkeypatch.setattr(kipc, "resolve_send", broken)
    rep = check_build(_two_threads(_serve, _call), {}, RUN, 0)
    found = [a for a in rep.anomalies if a.kind == "kernel-exception"]
    assert found and "IndexError" in found[0].key and "after" in found[0].detail


def test_user_misuse_is_not_an_anomaly() -> None:
    async def misuse(x: Any, sel: int) -> None:
        await x.call(sel, words=[1 << 64])            # OverflowError in the user API
        await x.call("a", words=[1])                  # TypeError
        await x.sleep(5)                               # TypeError: not a Timeout
        await x.wait(buffers=[(1 << 47, 4096)])        # ValueError, BRs unchanged
        await x.call(sel, words=[1], receive_timeout=Timeout.us(80))

    rep = check_build(_two_threads(_serve, misuse), {}, RUN, 0)
    assert rep.anomalies == []


def test_oracle_misuse_must_not_change_the_brs(monkeypatch: pytest.MonkeyPatch) -> None:
    real = UserContext._set_receive

    def sloppy(self: UserContext, window: Any, buffers: Any) -> None:
        self.utcb.br[6] = 0x1234                      # changes a BR, then checks
        real(self, window, buffers)

    monkeypatch.setattr(UserContext, "_set_receive", sloppy)

    async def misuse(x: Any, sel: int) -> None:
        await x.wait(buffers=[(1 << 47, 4096)], receive_timeout=Timeout.zero())

    rep = check_build(_two_threads(_serve, misuse), {}, RUN, 0)
    assert "bad-result" in kinds(rep)


def test_oracle_internal_death() -> None:
    def build(k: Kernel, rt: FuzzRuntime) -> None:
        async def body(t: UserContext) -> None:
            raise KeyError("not a fault, not a report: an internal error")

        k.new_task("a").new_thread(body, name="a")

    rep = check_build(build, {}, RUN, 0)
    assert "internal-death" in kinds(rep)


def test_oracle_dead_syscall() -> None:
    """A thread the kernel believes dead must not enter it; plant one that does."""
    async def zombie(x: Any, sel: int) -> None:
        x.th.alive = False                            # dead, as far as the oracle knows
        try:
            await x.sleep(Timeout.us(1))              # ... and still enters the kernel
        finally:
            x.th.alive = True

    rep = check_build(_two_threads(_serve, zombie), {}, RUN, 0)
    assert "dead-syscall" in kinds(rep)


def test_oracle_capability_escalation(monkeypatch: pytest.MonkeyPatch) -> None:
    real = kipc.resolve_send

    def lax(th: Any, sel: int) -> Any:                # ignores the R right
        cap = th.task.caps[sel] if 0 < sel < len(th.task.caps) else None
        if cap is not None and not cap.rights & 4:
            return cap.obj, th.tid, None
        return real(th, sel)

    monkeypatch.setattr(kipc, "resolve_send", lax)
    rep = check_build(_two_threads(_serve, _call, rights=0x1), {}, RUN, 0)
    assert "escalation-cap" in kinds(rep)
    monkeypatch.setattr(kipc, "resolve_send", real)
    assert check_build(_two_threads(_serve, _call, rights=0x1), {}, RUN, 0).anomalies == []


def _memory_system(legit: bool) -> Any:
    async def owner(x: Any) -> None:
        await x.plant_secret()
        if legit:  # the owner maps its secret page to the reader: a legitimate share
            await x.call(x.self_sel + 1, items=[MapItem(Fpage.mem(SECRET_ADDR, 12, Rights.R),
                                                        send_base=0x200000)])

    async def reader(x: Any, sel: int) -> None:
        await x.wait(window=Fpage.mem(0x200000, 12), receive_timeout=Timeout.us(20))
        if not legit:  # planted: the reader finds the owner's secret in its own memory
            await x.store(0x200000, x.rt.secret_of(x.rt.k.tasks[0]))
        await x.load(0x200000, 32)

    def build(k: Kernel, rt: FuzzRuntime) -> None:
        a, b = k.new_task("owner"), k.new_task("reader")
        rt.secret_owner(a)

        async def ob(t: UserContext) -> None:
            await owner(rt.ctx(t))

        async def rb(t: UserContext) -> None:
            await reader(rt.ctx(t), 0)

        a.new_thread(ob, name="owner", priority=90)
        rth = b.new_thread(rb, name="reader", priority=100)
        a.add_cap(rth)

    return build


def test_oracle_memory_escalation() -> None:
    rep = check_build(_memory_system(legit=False), {}, RUN, 0)
    assert "escalation-memory" in kinds(rep)
    # The same secret received through a map item the owner sent is no escalation.
    rep = check_build(_memory_system(legit=True), {}, RUN, 0)
    assert rep.anomalies == []


def test_oracle_nondeterminism() -> None:
    counter = {"n": 0}  # survives from one run to the next: not a function of the seed

    async def drifting(x: Any, sel: int) -> None:
        counter["n"] += 1
        await x.call(sel, words=[counter["n"]], receive_timeout=Timeout.us(80))

    rep = check_build(_two_threads(_serve, drifting), {}, RUN, 0)
    assert "nondeterminism" in kinds(rep)


def test_oracle_fastpath_divergence() -> None:
    async def peeking(x: Any, sel: int) -> None:      # behaves differently on the fast path
        n = 2 if x.rt.k.fastpath else 1
        await x.call(sel, words=[1] * n, receive_timeout=Timeout.us(80))

    rep = check_build(_two_threads(_serve, peeking), {}, RUN, 0)
    assert kinds(rep) == {"fastpath-divergence"}


def _stepped_pingpong(k: Kernel, rt: FuzzRuntime) -> None:
    """A ping-pong while the host makes threads above it, from t = 1,037 every 1,000."""
    s_task, c_task = k.new_task("s"), k.new_task("c")

    async def server(t: UserContext) -> None:
        x = rt.ctx(t)
        await x.wait()
        for _ in range(40):
            await x.reply_and_wait(words=[7])

    async def client(t: UserContext) -> None:
        x = rt.ctx(t)
        for i in range(40):
            await x.call(sel, words=[i])

    srv = s_task.new_thread(server, name="server", priority=100)
    c_task.new_thread(client, name="client", priority=100)
    sel = c_task.add_cap(srv)
    for i in range(1, 12):
        rt.at(i * 1_000 + 37, lambda: rt.host("spawn", c_task, 0, 200))


STEPPED = {"until": 5_000_000, "max_steps": None, "stepped": True}


def test_a_stepped_run_acts_between_steps_and_catches_what_the_host_does_there(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stepped run applies each host event between two steps, once the next step is
    that late; the three runs agree. A fast path that ignores a thread the host made
    between two steps (as it did) is a divergence."""
    rep = check_build(_stepped_pingpong, {}, STEPPED, 0)
    assert rep.anomalies == []
    out = fuzz.run_build(_stepped_pingpong, {}, STEPPED, 0, "fast")
    hosts = [e for e in out.log if e[0] == "host"]
    assert len(hosts) == 11 and all(e[4] >= i * 1_000 + 37 for i, e in enumerate(hosts, 1))
    assert len([e for e in out.log if e[0] == "spawned"]) == 11
    assert out.end[0] == "stopped"

    next_cpu = Kernel._next_cpu

    def stays_alone(k: Kernel) -> Any:
        k.boot_cpu.alone = len(k.cpus) == 1  # (the flag as it was before that fix)
        return next_cpu(k)

    monkeypatch.setattr(Kernel, "_next_cpu", stays_alone)
    assert "fastpath-divergence" in kinds(check_build(_stepped_pingpong, {}, STEPPED, 0))


def test_the_generator_steps_some_runs_and_makes_threads_from_the_host() -> None:
    progs = [generate(seed) for seed in range(300)]
    stepped = [p for p in progs if p.stepped]
    assert 20 < len(stepped) < 80
    with_events = next(p for p in stepped if p.events)
    assert "'stepped': True" in render(with_events) and "rt.at(" in render(with_events)
    assert not [p for p in progs if not p.stepped and "stepped" in render(p)]
    spawns = [e for p in progs for e in p.events if e.action == "spawn"]
    assert len(spawns) > 50 and {e.priority for e in spawns} == {10, 150, 255}


def test_oracle_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "WATCHDOG_SECONDS", 0.5)

    async def stuck(x: Any, sel: int) -> None:
        while True:                                   # never awaits: the CPU loop never returns
            pass

    rep = check_build(_two_threads(_serve, stuck), {}, RUN, 0)
    assert "hang" in kinds(rep)


def test_oracle_hang_swallowed_by_the_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that catches the watchdog's exception still counts as a hang."""
    monkeypatch.setattr(fuzz, "WATCHDOG_SECONDS", 0.5)

    async def stuck(x: Any, sel: int) -> None:
        try:
            while True:
                pass
        except BaseException:
            return

    rep = check_build(_two_threads(_serve, stuck), {}, RUN, 0)
    assert "hang" in kinds(rep)


def test_hashseed_digests_match_in_process() -> None:
    seeds = [3, 4]
    other = hashseed_digests(seeds, other_hashseed())
    assert other == {s: traced_digest(s) for s in seeds}
    assert len(set(other.values())) == 2


# --- shrinking and the standalone program ---------------------------------------------------

def test_shrinking_keeps_the_anomaly_and_renders_a_standalone_program(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    real = UserContext.unmap

    async def broken_unmap(self: UserContext, fpage: Fpage, self_too: bool = False) -> int:
        await real(self, fpage, self_too)
        raise IndexError("planted in unmap")

    monkeypatch.setattr(UserContext, "unmap", broken_unmap)
    seed = next(s for s in range(200)
                if any(a.kind == "kernel-exception" for a in check_program(program_of(s)).anomalies))
    prog = program_of(seed)
    sig = next(a.signature for a in check_program(prog).anomalies if a.kind == "kernel-exception")
    small = shrink(prog, sig, budget=60)
    assert len(small.threads) == 1 and small.calls <= 3 < prog.calls
    assert len(small.threads) < len(prog.threads) or small.calls < prog.calls
    assert any(a.signature == sig for a in check_program(small).anomalies)
    source = render(small)
    assert "unmap" in source and "def build(k, rt):" in source
    compile_program(small)  # the source is what runs
    # The standalone program, run on its own, prints FAIL while the planted bug is there
    # (here: in this process only) and OK without it.
    path = tmp_path / "repro.py"
    path.write_text(source)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=120, check=True)
    assert "OK: no anomaly" in out.stdout and "FAIL" not in out.stdout


# --- the command -------------------------------------------------------------------------

def test_cli_json() -> None:
    result = CliRunner().invoke(main, ["fuzz", "--seeds", "6", "--seed-start", "100", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["seeds"] == 6 and out["runs"] == 18 and out["anomalies"] == []
    assert out["system_calls"] > 100 and out["calls_per_second"] > 0
    assert out["first_seed"] == 100 and out["last_seed"] == 105
    assert set(out["shape"]) >= {"tasks", "threads", "calls", "ops"}
    assert out["distinct"] == []


def test_cli_rejects_seeds_with_minutes() -> None:
    result = CliRunner().invoke(main, ["fuzz", "--seeds", "3", "--minutes", "1"])
    assert result.exit_code != 0 and "not both" in result.output
