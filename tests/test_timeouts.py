"""IPC timeouts (lecture: "IPC Timeouts"; SPEC S6; FIASCO_FACTS "Timeouts").

Every kind (never, zero, relative in µs or cycles, absolute) in each phase (send,
receive), the receive timeout of a call, sleep, and Fiasco's 16-bit encoding. A finite
timeout expires exactly its length after the thread started waiting, in simulated cycles
(the trace's "timeout" event is at the expiry); the timer interrupt that ends the wait
costs the profile's `timer_tick`, so the thread resumes that many cycles after the expiry.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import RECEIVE, ipc_cost, make_kernel, states, switch_cost, timed_states, timeouts, when
from l4sim import IpcError, Timeout

OK = IpcError.OK
SETIMEOUT = IpcError.SETIMEOUT
RETIMEOUT = IpcError.RETIMEOUT

MHZ = 1000          # 1 µs = 1000 cycles: easy arithmetic
N = 7_000           # the relative timeout, in cycles
ABS = 20_000        # the absolute one


def _timeout(kind: str) -> Timeout:
    return {"us": Timeout.us(N // 1000), "cycles": Timeout.cycles(N), "at": Timeout.at(ABS)}[kind]


def _expected_expiry(kind: str, began_waiting: int) -> int:
    return ABS if kind == "at" else began_waiting + N


def tick(k) -> int:
    """Cycles of the timer interrupt that fires expired timeouts."""
    return k.costs.timer_tick


# --- send phase ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["us", "cycles", "at"])
def test_send_timeout_expires_exactly(kind):
    """A sender whose receiver never gets ready times out exactly when its timeout expires
    and ends SETIMEOUT after the timer tick, no longer in the receiver's sender queue."""
    k = make_kernel(frequency_mhz=MHZ)
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(100_000))
        r = await t.wait(receive_timeout=Timeout.zero())    # nobody is queued any more
        log.append(("rcv", r.error, t.now))

    async def sender(t, dest):
        r = await t.send(dest, words=[1], send_timeout=_timeout(kind))
        log.append(("snd", r.error, t.now))

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    assert k.run().reason == "done"

    blocked_at = when(k, "snd", "state", "send_wait")
    expiry = _expected_expiry(kind, blocked_at)
    assert blocked_at == ipc_cost(k) + switch_cost(k, same_space=False) + ipc_cost(k)
    assert timeouts(k) == [(expiry, "snd"), (100_000 + ipc_cost(k), "rcv")]
    assert log[0] == ("snd", SETIMEOUT, expiry + tick(k))  # nothing else ran: no switch
    assert log[1][:2] == ("rcv", RETIMEOUT)


@pytest.mark.parametrize("kind", ["us", "cycles", "at"])
def test_finite_send_timeout_not_reached(kind):
    """The receiver arrives in time: the send succeeds and the disarmed timer never fires."""
    k = make_kernel(frequency_mhz=MHZ)
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(3_000))
        log.append(("rcv", (await t.wait()).words))
        r = await t.wait()       # waits past the sender's old deadline: no stray timeout
        log.append(("rcv2", r.error, r.words))

    async def sender(t, dest):
        r = await t.send(dest, words=[1], send_timeout=_timeout(kind))
        log.append(("snd", r.error))
        await t.sleep(Timeout.cycles(50_000))
        await t.send(dest, words=[2])

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    assert k.run().reason == "done"
    assert log == [("rcv", (1,)), ("snd", OK), ("rcv2", OK, (2,))]
    assert [who for _, who in timeouts(k)] == ["rcv", "snd"]     # the two sleeps only


def test_zero_send_timeout_receiver_not_ready():
    """Zero: only if the partner is ready now. The sender never blocks."""
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(10_000))

    async def sender(t, dest):
        t0 = t.now
        r = await t.send(dest, words=[1], send_timeout=Timeout.zero())
        log.append((r.error, t.now - t0))

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    assert k.run().reason == "done"
    assert log == [(SETIMEOUT, ipc_cost(k, 1))]
    assert "send_wait" not in [s for _, s in states(k, "snd")]
    assert timeouts(k) == [(when(k, "rcv", "state", "receive_wait") + 10_000, "rcv")]


def test_zero_send_timeout_receiver_ready():
    k = make_kernel()
    log = []

    async def receiver(t):
        log.append(("rcv", (await t.wait()).words))

    async def sender(t, dest):
        log.append(("snd", (await t.send(dest, words=[3], send_timeout=Timeout.zero())).error))

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    assert k.run().reason == "done"
    assert log == [("snd", OK), ("rcv", (3,))]


def test_never_send_timeout_waits_as_long_as_it_takes():
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(10_000_000))
        log.append(("rcv", (await t.wait()).words, t.now))

    async def sender(t, dest):
        r = await t.send(dest, words=[4], send_timeout=Timeout.never())
        log.append(("snd", r.error))

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    assert k.run().reason == "done"
    woke = 10_000_000 + ipc_cost(k) + tick(k)   # the sleep's end and its tick; the sender ran last
    assert log == [("rcv", (4,), woke + switch_cost(k, False) + ipc_cost(k)), ("snd", OK)]
    assert [who for _, who in timeouts(k)] == ["rcv"]


def test_send_timeout_already_expired_absolute():
    """An absolute timeout in the past: a sender that would have to wait fails at once."""
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(10_000))

    async def sender(t, dest):
        await t.sleep(Timeout.cycles(1_000))
        t0 = t.now
        r = await t.send(dest, words=[1], send_timeout=Timeout.at(500))
        log.append((r.error, t.now - t0))

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    k.run()
    assert log == [(SETIMEOUT, ipc_cost(k, 1))]


# --- receive phase -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["us", "cycles", "at"])
@pytest.mark.parametrize("closed", [False, True], ids=["open", "closed"])
def test_receive_timeout_expires_exactly(kind, closed):
    """A receiver nobody sends to times out exactly at its timeout and ends RETIMEOUT after
    the timer tick; a late sender with a zero timeout then finds it no longer ready."""
    k = make_kernel(frequency_mhz=MHZ)
    log = []
    sel = {}

    async def receiver(t):
        to = _timeout(kind)
        r = await (t.receive(sel["snd"], receive_timeout=to) if closed
                   else t.wait(receive_timeout=to))
        log.append(("rcv", r.error, r.words, t.now))
        await t.sleep(Timeout.cycles(100_000))             # alive, but not receiving

    async def sender(t, dest):
        await t.sleep(Timeout.cycles(50_000))
        log.append(("snd", (await t.send(dest, words=[1], send_timeout=Timeout.zero())).error))

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    snd = st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    sel["snd"] = rt.add_cap(snd)
    assert k.run().reason == "done"
    began = when(k, "rcv", "state", "receive_wait")
    assert began == ipc_cost(k)
    expiry = _expected_expiry(kind, began)
    # the sender blocked in its sleep before: the receiver is resumed by a switch after the tick
    assert log == [("rcv", RETIMEOUT, (), expiry + tick(k) + switch_cost(k, same_space=False)),
                   ("snd", SETIMEOUT)]
    assert timeouts(k)[0] == (expiry, "rcv")


@pytest.mark.parametrize("kind", ["us", "cycles", "at"])
def test_finite_receive_timeout_not_reached(kind):
    """A sender arrives in time: the receive succeeds; the old deadline passes harmlessly
    while the receiver waits again."""
    k = make_kernel(frequency_mhz=MHZ)
    log = []

    async def receiver(t):
        r = await t.wait(receive_timeout=_timeout(kind))
        log.append(("rcv", r.error, r.words))
        r = await t.wait()
        log.append(("rcv2", r.error, r.words))

    async def sender(t, dest):
        await t.sleep(Timeout.cycles(2_000))
        await t.send(dest, words=[1])
        await t.sleep(Timeout.cycles(40_000))
        await t.send(dest, words=[2])

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    assert k.run().reason == "done"
    assert log == [("rcv", OK, (1,)), ("rcv2", OK, (2,))]
    assert [who for _, who in timeouts(k)] == ["snd", "snd"]


def test_zero_receive_timeout_nobody_queued():
    k = make_kernel()
    log = []

    async def receiver(t):
        t0 = t.now
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append((r.error, t.now - t0))

    k.new_task("r").new_thread(receiver, name="rcv")
    assert k.run().reason == "done"
    assert log == [(RETIMEOUT, ipc_cost(k))]
    assert "receive_wait" not in [s for _, s in states(k, "rcv")]


def test_zero_receive_timeout_sender_queued():
    """Zero receive timeout with a sender already queued: the partner is ready, it succeeds."""
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(5_000))
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append((r.error, r.words))

    async def sender(t, dest):
        await t.send(dest, words=[9])

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    assert k.run().reason == "done"
    assert log == [(OK, (9,))]


def test_receive_timeout_does_not_start_when_a_sender_is_queued():
    """FIASCO_FACTS: the receive timeout starts only if no sender is queued. An absolute
    timeout already in the past does not fail a receive that finds its sender."""
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(5_000))
        r = await t.wait(receive_timeout=Timeout.at(1))
        log.append((r.error, r.words))

    async def sender(t, dest):
        await t.send(dest, words=[8])

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    k.run()
    assert log == [(OK, (8,))]


def test_never_receive_timeout_is_idle():
    """An open wait with no end and nobody to send: the run is done, the thread blocked."""
    k = make_kernel()

    async def receiver(t):
        await t.wait(receive_timeout=Timeout.never())

    rcv = k.new_task("r").new_thread(receiver, name="rcv")
    res = k.run()
    assert res.reason == "done"
    assert res.blocked == [rcv]
    assert res.now == ipc_cost(k)
    assert timeouts(k) == []


# --- the receive timeout of a call ------------------------------------------------------------

def test_call_receive_timeout_server_waiting_never_replies():
    """The server takes the call and never replies: the caller's timeout expires exactly the
    timeout after its receive phase began (the moment its send was delivered); it ends
    RETIMEOUT after the timer tick and the switch back to it."""
    k = make_kernel()
    log = []

    async def server(t):
        r = await t.wait()
        log.append(("srv got", r.words))
        await t.wait()                                     # never replies

    async def client(t, dest):
        r = await t.call(dest, words=[1], receive_timeout=Timeout.cycles(N))
        log.append(("cli", r.error, r.words, t.now))

    srv = k.new_task("s").new_thread(server, name="srv")
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli")
    res = k.run()
    assert res.reason == "done"
    delivered = when(k, "cli", "state", "receive_wait")
    assert delivered == ipc_cost(k) + switch_cost(k, False) + ipc_cost(k, 1)
    assert timeouts(k) == [(delivered + N, "cli")]
    assert log == [("srv got", (1,)),
                   ("cli", RETIMEOUT, (), delivered + N + tick(k) + switch_cost(k, False))]


def test_call_receive_timeout_starts_when_the_queued_call_is_taken():
    """A queued call: its receive timeout starts only when the server takes the message
    (the time it waited in the sender queue does not count)."""
    k = make_kernel()
    log = []
    short = 3_000

    async def client(t, dest):
        r = await t.call(dest, words=[1], receive_timeout=Timeout.cycles(short))
        log.append(("cli", r.error, t.now))

    async def server(t):
        await t.sleep(Timeout.cycles(10_000))              # longer than the timeout
        r = await t.wait()
        log.append(("srv got", r.words, t.now))
        await t.wait()                                     # never replies

    st_ = k.new_task("s")
    ct = k.new_task("c")
    sel = {}

    async def client_body(t):
        await client(t, sel["srv"])

    ct.new_thread(client_body, name="cli")
    srv = st_.new_thread(server, name="srv")
    sel["srv"] = ct.add_cap(srv)
    assert k.run().reason == "done"
    taken = when(k, "cli", "state", "receive_wait")
    assert [s for _, s in timed_states(k, "cli")][:4] == ["ready", "send_wait", "receive_wait",
                                                          "timed_out"]
    assert log[0] == ("srv got", (1,), taken)
    assert timeouts(k)[1] == (taken + short, "cli")
    assert log[1] == ("cli", RETIMEOUT, taken + short + tick(k) + switch_cost(k, False))


def test_call_send_timeout_skips_the_receive_phase():
    """A call whose send times out returns SETIMEOUT (after the timer tick); it never waits
    for a reply."""
    k = make_kernel()
    log = []

    async def server(t):
        await t.sleep(Timeout.cycles(100_000))

    async def client(t, dest):
        r = await t.call(dest, words=[1], send_timeout=Timeout.cycles(N),
                         receive_timeout=Timeout.never())
        log.append((r.error, t.now))

    srv = k.new_task("s").new_thread(server, name="srv")
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli")
    assert k.run().reason == "done"
    blocked = when(k, "cli", "state", "send_wait")
    assert timeouts(k)[0] == (blocked + N, "cli")
    assert log == [(SETIMEOUT, blocked + N + tick(k))]
    assert "receive_wait" not in [s for _, s in states(k, "cli")]


# --- sleep ---------------------------------------------------------------------------------------

def test_sleep_cycles_returns_retimeout_at_the_right_time():
    k = make_kernel()
    log = []

    async def sleeper(t):
        t0 = t.now
        r = await t.sleep(Timeout.cycles(12_345))
        log.append((r.error, t.now - t0))

    k.new_task("t").new_thread(sleeper, name="z")
    assert k.run().reason == "done"
    assert timeouts(k) == [(ipc_cost(k) + 12_345, "z")]
    assert log == [(RETIMEOUT, ipc_cost(k) + 12_345 + tick(k))]


def test_sleep_us_is_converted_with_the_clock():
    """Timeout.us uses the kernel's clock: 5 µs are 5 * 2663 cycles on the default CPU
    (the sleeper resumes after the timer tick)."""
    k = make_kernel()
    log = []

    async def sleeper(t):
        r = await t.sleep(Timeout.us(5))
        log.append((r.error, t.now))

    k.new_task("t").new_thread(sleeper, name="z")
    k.run()
    assert timeouts(k) == [(ipc_cost(k) + 5 * 2663, "z")]
    assert log == [(RETIMEOUT, ipc_cost(k) + 5 * 2663 + tick(k))]


def test_sleep_until_absolute_time():
    k = make_kernel()
    log = []

    async def sleeper(t):
        r = await t.sleep(Timeout.at(1_000_000))
        log.append((r.error, t.now))

    k.new_task("t").new_thread(sleeper, name="z")
    k.run()
    assert timeouts(k) == [(1_000_000, "z")]
    assert log == [(RETIMEOUT, 1_000_000 + tick(k))]


def test_sleep_zero_returns_at_once():
    k = make_kernel()
    log = []

    async def sleeper(t):
        r = await t.sleep(Timeout.zero())
        log.append((r.error, t.now))

    k.new_task("t").new_thread(sleeper, name="z")
    k.run()
    assert log == [(RETIMEOUT, ipc_cost(k))]


def test_sleep_is_not_woken_by_a_sender():
    """Sleep is a receive from nobody: a sender queues and waits until a real receive."""
    k = make_kernel()
    log = []

    async def sleeper(t):
        r = await t.sleep(Timeout.cycles(20_000))
        log.append(("slept", r.error))
        log.append(("got", (await t.wait()).words))

    async def sender(t, dest):
        log.append(("sent", (await t.send(dest, words=[1])).error))

    z = k.new_task("t").new_thread(sleeper, name="z")
    st_ = k.new_task("s")
    st_.new_thread(sender, st_.add_cap(z), name="snd")
    k.run()
    assert log == [("slept", RETIMEOUT), ("got", (1,)), ("sent", OK)]


def test_sleeps_of_several_threads_end_in_deadline_order():
    k = make_kernel()
    log = []

    async def sleeper(t, n):
        await t.sleep(Timeout.cycles(n))
        log.append(n)

    task = k.new_task("t")
    for n in (30_000, 10_000, 20_000):
        task.new_thread(sleeper, n, name=f"z{n}")
    k.run()
    assert log == [10_000, 20_000, 30_000]


# --- Fiasco's 16-bit encoding ------------------------------------------------------------------

def test_raw_special_values():
    assert Timeout.from_raw(0) == Timeout.never()
    assert Timeout.from_raw(0x0400) == Timeout.zero()
    assert Timeout.never().to_raw() == 0
    assert Timeout.zero().to_raw() == 0x0400
    assert Timeout.raw_from_us(0) == 0x0400


@pytest.mark.parametrize("us, raw", [
    (1, 0x0001),                     # e = 0, m = 1
    (1023, 0x03FF),                  # the largest exact mantissa
    (1024, 1 << 10 | 512),           # msb 10: e = 1, m = 512
    (1025, 1 << 10 | 513),           # rounded up: m = ceil(1025 / 2)
    (2047, 2 << 10 | 512),           # m = 1024 > 1023: e += 1, m >>= 1
    (1_000_000, 10 << 10 | 977),     # 1 s: e = 19 - 9, m = ceil(10^6 / 1024)
    ((1 << 41) - 1, 31 << 10 | 1023),  # the largest finite value
    (1 << 41, 0),                    # beyond: never
    (1 << 50, 0),
])
def test_raw_from_us_examples(us, raw):
    assert Timeout.raw_from_us(us) == raw


@pytest.mark.parametrize("raw, us", [(1, 1), (0x03FF, 1023), (1 << 10 | 512, 1024),
                                     (3 << 10 | 5, 40), (31 << 10 | 1023, 1023 << 31)])
def test_from_raw_relative_is_m_times_2_to_the_e_microseconds(raw, us):
    assert Timeout.from_raw(raw) == Timeout.us(us)
    assert Timeout.us(us).to_raw() == Timeout.raw_from_us(us)


def _decoded_us(raw: int) -> int:
    e, m = (raw >> 10) & 0x1F, raw & 0x3FF
    return m << e


MAX_FINITE_US = 1023 << 31   # the largest encodable value: e = 31, m = 1023


@given(st.integers(min_value=MAX_FINITE_US, max_value=(1 << 41) - 1))
def test_raw_beyond_the_largest_mantissa_is_clamped(us):
    """Up to 2**41 - 1 µs a timeout stays finite: above 1023 * 2**31 it is clamped to
    e = 31, m = 1023 (FIASCO_FACTS: m = 1023 when e = 31)."""
    assert Timeout.raw_from_us(us) == 31 << 10 | 1023


@given(st.integers(min_value=1, max_value=MAX_FINITE_US))
def test_raw_round_trip_within_resolution(us):
    """Encoding rounds up to the encoding's resolution: the decoded value is at least the
    requested one and less than one step (2**e µs) above it."""
    raw = Timeout.raw_from_us(us)
    assert 0 < raw <= 0x7FFF and raw != 0x0400
    e = (raw >> 10) & 0x1F
    m = raw & 0x3FF
    assert 1 <= m <= 1023
    decoded = _decoded_us(raw)
    assert us <= decoded < us + (1 << e)
    assert Timeout.from_raw(raw) == Timeout.us(decoded)
    assert Timeout.from_raw(raw).to_raw() == raw          # a decoded value re-encodes exactly
    assert Timeout.raw_from_us(decoded) == raw


@given(st.integers(min_value=1, max_value=31), st.integers(min_value=512, max_value=1023))
def test_raw_canonical_values_round_trip(e, m):
    raw = e << 10 | m
    assert Timeout.from_raw(raw).to_raw() == raw


def test_raw_timeouts_through_the_abi():
    """The raw ABI takes Fiasco's 32-bit timeout word (send half in bits 31-16): a relative
    raw receive timeout of 10 µs, an absolute one read from a buffer register (µs of the
    kernel clock), and a zero-mantissa value, which is already expired (no timer, no tick)."""
    k = make_kernel(frequency_mhz=MHZ)
    log = []

    async def body(t):
        r = await t.ipc(t.self_sel, 0, RECEIVE, timeouts=Timeout.raw_from_us(10))
        log.append(("rel", r.error, t.now))
        t.utcb.br[5] = 50                                  # absolute: at 50 µs
        r = await t.ipc(t.self_sel, 0, RECEIVE, timeouts=0x8000 | 5)
        log.append(("abs", r.error, t.now))
        t0 = t.now
        r = await t.ipc(t.self_sel, 0, RECEIVE, timeouts=2 << 10)   # m = 0, e = 2
        log.append(("expired", r.error, t.now - t0))

    k.new_task("t").new_thread(body, name="z")
    assert k.run().reason == "done"
    c = ipc_cost(k)
    assert timeouts(k) == [(c + 10_000, "z"), (50_000, "z")]
    assert log == [("rel", RETIMEOUT, c + 10_000 + tick(k)), ("abs", RETIMEOUT, 50_000 + tick(k)),
                   ("expired", RETIMEOUT, c)]


def test_raw_send_timeout_half():
    """The send half is bits 31-16: a raw zero send timeout fails at once."""
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.sleep(Timeout.cycles(10_000))

    async def sender(t, dest):
        t.utcb.mr[0] = 5
        r = await t.ipc(dest, 1, 1, timeouts=0x0400 << 16)
        log.append(r.error)

    rt, st_ = k.new_task("r"), k.new_task("s")
    rcv = rt.new_thread(receiver, name="rcv")
    st_.new_thread(sender, st_.add_cap(rcv), name="snd")
    k.run()
    assert log == [SETIMEOUT]


def test_friendly_constructors_reject_bad_values():
    with pytest.raises(ValueError):
        Timeout.us(-1)
    with pytest.raises(ValueError):
        Timeout.cycles(-1)
    with pytest.raises(ValueError):
        Timeout.at(-5)
    with pytest.raises(TypeError):
        Timeout.cycles(1.5)
    with pytest.raises(ValueError):
        Timeout.from_raw(0x10000)
    with pytest.raises(ValueError):
        Timeout.raw_from_us(-1)


def _timed_calls(k, calls: int, sizes: list[int]) -> None:
    """A client makes `calls` calls with a 1 s receive timeout (each arms a timer that the
    reply cancels); the server notes the size of the timer heap now and then."""
    heap = k.cpus[0].timers

    async def server(t):
        await t.wait()
        i = 0
        while True:
            i += 1
            if not i & 0x3FF:
                sizes.append(len(heap))
            await t.reply_and_wait(words=(i,))

    async def client(t, dest):
        for _ in range(calls):
            r = await t.call(dest, words=(1,), receive_timeout=Timeout.us(1_000_000))
            assert r.ok
        sizes.append(len(heap))

    task = k.new_task("t")
    srv = task.new_thread(server, priority=10)
    task.new_thread(client, task.add_cap(srv), priority=10)
    res = k.run()
    assert res.reason == "done" and not res.died


def test_cancelled_timers_do_not_pile_up_in_the_heap():
    """A million calls with a 1 s timeout each: every reply cancels a timer long before
    its deadline. The heap holds at most as many cancelled entries as live ones plus a
    constant, so it stays small (it held a million entries when they stayed until their
    deadline)."""
    from l4sim.kernel.sched import TIMER_SLACK

    k = make_kernel(check=False, trace=False)  # (checked below, on fewer calls)
    sizes: list[int] = []
    _timed_calls(k, 1_000_000, sizes)
    assert len(sizes) > 900
    assert max(sizes) <= 2 + TIMER_SLACK + 1
    assert k.dead_timers == sum(1 for e in k.cpus[0].timers if e[2] is None and e[3] is None)


def test_cancelled_timers_stay_bounded_under_checking():
    """The same on a checked kernel (fewer calls): the invariant check counts the heap's
    cancelled entries after every operation."""
    k = make_kernel(trace=False)
    sizes: list[int] = []
    _timed_calls(k, 2_000, sizes)
    assert max(sizes) <= 70
