"""The user/kernel boundary (SPEC S3 capabilities, S14 errors, S22 API; FIASCO_FACTS
error codes and message tag).

What reaches the kernel malformed (a bad capability, a raw tag whose items run beyond the
MRs, a capability of the wrong kind) is an error result to that thread and changes no
kernel state. Misuse of the Python API raises where it happens; a thread that does not
catch it dies of it and the run goes on.
"""

from __future__ import annotations

import pytest

from helpers import CALL, RECEIVE, REPLY_AND_WAIT, SEND, WAIT, make_kernel, snapshot
from l4sim import CapRights, IpcError, MsgTag, Timeout

OK = IpcError.OK
ENOT_EXISTENT = IpcError.ENOT_EXISTENT


# --- bit-exact values ---------------------------------------------------------------------------

def test_error_codes_are_fiascos():
    assert {e.name: int(e) for e in IpcError} == {
        "OK": 0x00, "SETIMEOUT": 0x02, "RETIMEOUT": 0x03, "ENOT_EXISTENT": 0x04,
        "SECANCELED": 0x06, "RECANCELED": 0x07, "SEMSGCUT": 0x08, "REMSGCUT": 0x09,
        "SESNDPFTO": 0x0A, "RESNDPFTO": 0x0B, "SERCVPFTO": 0x0C, "RERCVPFTO": 0x0D,
        "SEABORTED": 0x0E, "REABORTED": 0x0F, "SEMAPFAILED": 0x10, "REMAPFAILED": 0x11,
        "NO_REPLY_CAP": 0x13,
    }
    # a failed transfer: the sender gets e, the receiver e | 1
    for snd, rcv in (("SETIMEOUT", "RETIMEOUT"), ("SECANCELED", "RECANCELED"),
                     ("SEMSGCUT", "REMSGCUT"), ("SEABORTED", "REABORTED")):
        assert IpcError[snd] | 1 == IpcError[rcv]


def test_cap_rights_bits():
    assert (CapRights.W, CapRights.S, CapRights.R, CapRights.D, CapRights.ALL) == (1, 2, 4, 8, 0xF)


def test_msgtag_layout():
    tag = MsgTag(label=0x12, words=3, items=1, flags=MsgTag.FLAG_TRANSFER_FPU)
    assert tag.raw == 0x12 << 16 | 0x1000 | 1 << 6 | 3
    assert (tag.label, tag.words, tag.items, tag.flags) == (0x12, 3, 1, 0x1000)


def test_msgtag_negative_label_from_an_unsigned_word():
    """The label is signed: a page-fault tag (label -2, 2 words) read from an MR word."""
    word = ((-2) << 16 | 2) & ((1 << 64) - 1)
    tag = MsgTag.from_raw(word)
    assert (tag.label, tag.words, tag.items) == (-2, 2, 0)
    assert MsgTag(label=-2, words=2).word == word


def test_msgtag_from_raw_round_trips_a_negative_label():
    tag = MsgTag(label=-2, words=2)
    assert MsgTag.from_raw(tag.raw) == tag
    assert MsgTag.from_raw(tag.raw).label == -2


# --- invalid capabilities ------------------------------------------------------------------------

def _bad_selectors(k, task, target_thread):
    gate = k.new_gate(target_thread, label=1)
    other_task = k.new_task("other")
    return [
        ("empty", 0),
        ("out of range", 10_000),
        ("negative", -1),
        ("thread without R", task.add_cap(target_thread, CapRights.ALL & ~CapRights.R)),
        ("gate without R", task.add_cap(gate, CapRights.W | CapRights.S | CapRights.D)),
        ("task (wrong kind)", task.add_cap(other_task)),
    ]


@pytest.mark.parametrize("op", ["send", "call", "send zero", "call with timeouts"])
def test_send_to_invalid_capability_is_not_existent(op):
    """S3: a capability that is empty, out of range, of the wrong kind or lacking R is an
    error returned to the caller (ENOT_EXISTENT), never an exception, and changes nothing."""
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.wait()

    async def body(t, sels):
        for what, s in sels:
            before = snapshot(k)
            if op == "send":
                r = await t.send(s, words=[1])
            elif op == "call":
                r = await t.call(s, words=[1])
            elif op == "send zero":
                r = await t.send(s, words=[1], send_timeout=Timeout.zero())
            else:
                r = await t.call(s, words=[1], send_timeout=Timeout.cycles(10),
                                 receive_timeout=Timeout.cycles(10))
            log.append((what, r.error, r.words, snapshot(k) == before))

    task = k.new_task("t")
    rcv = k.new_task("r").new_thread(receiver, name="rcv")
    sels = _bad_selectors(k, task, rcv)
    task.new_thread(body, sels, name="b")
    res = k.run()
    assert res.reason == "done"
    assert log == [(what, ENOT_EXISTENT, (), True) for what, _ in sels]
    assert rcv.state_name == "receive_wait"                 # nothing reached it


def test_closed_receive_from_invalid_capability_is_not_existent():
    """A closed receive names a thread: empty, out-of-range and rights-less selectors and a
    capability to a task are ENOT_EXISTENT, at once, without blocking."""
    k = make_kernel()
    log = []

    async def other(t):
        await t.wait()

    async def body(t, sels):
        for what, s in sels:
            t0 = t.now
            r = await t.receive(s)
            log.append((what, r.error, t.now - t0))

    task = k.new_task("t")
    oth = k.new_task("o").new_thread(other, name="other")
    sels = _bad_selectors(k, task, oth)
    task.new_thread(body, sels, name="b")
    assert k.run().reason == "done"
    assert log == [(what, ENOT_EXISTENT, k.costs.ipc_cost(0)) for what, _ in sels]


def test_capability_with_only_r_is_enough_to_invoke():
    k = make_kernel()
    log = []

    async def receiver(t):
        log.append((await t.wait()).words)

    async def sender(t, dest):
        log.append((await t.send(dest, words=[5])).error)

    rcv = k.new_task("r").new_thread(receiver, name="rcv")
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rcv, CapRights.R), name="snd")
    k.run()
    assert log == [OK, (5,)]


# --- the raw ABI ----------------------------------------------------------------------------------

def test_raw_ipc_call_and_reply_and_wait():
    """t.ipc is Fiasco's l4_ipc: the message is in the MRs, the tag describes it."""
    k = make_kernel()
    log = []

    async def server(t):
        r = await t.ipc(0, 0, WAIT)
        log.append(("srv", r.error, r.tag.label, r.words))
        t.utcb.mr[0] = r.words[0] + r.words[1]
        r = await t.ipc(0, MsgTag(words=1), REPLY_AND_WAIT, timeouts=0x0400 << 16)
        log.append(("srv 2", r.error))

    async def client(t, dest):
        t.utcb.mr[0], t.utcb.mr[1] = 20, 22
        r = await t.ipc(dest, MsgTag(label=9, words=2), CALL)
        log.append(("cli", r.error, r.words))
        r = await t.ipc(dest, 0 << 16 | 0, SEND)
        log.append(("cli send", r.error))

    srv = k.new_task("s").new_thread(server, name="srv")
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli")
    assert k.run().reason == "done"
    assert log == [("srv", OK, 9, (20, 22)), ("cli", OK, (42,)), ("cli send", OK), ("srv 2", OK)]


@pytest.mark.parametrize("flags", [SEND, CALL], ids=["send", "call"])
@pytest.mark.parametrize("receiver_waits", [True, False], ids=["receiver-waits", "receiver-busy"])
@pytest.mark.parametrize("tag", [
    MsgTag(words=63, items=1),            # 63 + 2 = 65 MRs
    MsgTag(words=2, items=31),            # 2 + 62 = 64 MRs
    MsgTag(words=0, items=63),
    (40 << 6) | 1,                        # a raw int tag: 40 items
], ids=["63w1i", "2w31i", "0w63i", "int-40i"])
def test_raw_malformed_tag_is_an_error_and_changes_nothing(flags, receiver_waits, tag):
    """S14: a raw tag whose words and typed items (two MRs each) exceed the 63 MRs is an
    error result (SEMSGCUT) to the sender; no kernel state changes and nothing is
    delivered."""
    k = make_kernel()
    log = []

    async def receiver(t):
        if not receiver_waits:
            await t.sleep(Timeout.cycles(50_000))
        r = await t.wait(receive_timeout=Timeout.zero() if not receiver_waits else Timeout.cycles(30_000))
        log.append(("rcv", r.error))

    async def sender(t, dest):
        before = snapshot(k)
        r = await t.ipc(dest, tag, flags)
        after = snapshot(k)
        log.append(("snd", r.error, r.ok, after == before))

    rcv = k.new_task("r").new_thread(receiver, name="rcv")
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rcv), name="snd")
    res = k.run()
    assert res.reason == "done"
    assert log == [("snd", IpcError.SEMSGCUT, False, True), ("rcv", IpcError.RETIMEOUT)]
    assert res.died == []


def test_raw_malformed_reply_keeps_the_reply_capability():
    """A malformed reply is refused before anything happens: the one-shot reply capability
    is not consumed, the caller still waits, and a proper reply then reaches it."""
    k = make_kernel()
    log = []

    async def server(t):
        await t.wait()
        before = snapshot(k)
        r = await t.ipc(0, MsgTag(words=3, items=31), REPLY_AND_WAIT, timeouts=0x0400 << 16)
        log.append(("malformed", r.error, snapshot(k) == before))
        log.append(("reply", (await t.reply(words=[6])).error))

    async def client(t, dest):
        r = await t.call(dest, words=[1])
        log.append(("client", r.error, r.words))

    srv = k.new_task("s").new_thread(server, name="srv")
    ct = k.new_task("c")
    ct.new_thread(client, ct.add_cap(srv), name="cli")
    assert k.run().reason == "done"
    assert log == [("malformed", IpcError.SEMSGCUT, True), ("reply", OK), ("client", OK, (6,))]


def test_raw_well_formed_tag_at_the_limit():
    """63 words use every MR and are a well-formed message: delivered whole."""
    k = make_kernel()
    log = []

    async def receiver(t):
        r = await t.wait()
        log.append(("rcv", r.error, len(r.words)))

    async def sender(t, dest):
        for i in range(63):
            t.utcb.mr[i] = i
        r = await t.ipc(dest, MsgTag(words=63), SEND)
        log.append(("snd", r.error))

    rcv = k.new_task("r").new_thread(receiver, name="rcv")
    st = k.new_task("s")
    st.new_thread(sender, st.add_cap(rcv), name="snd")
    k.run()
    assert log == [("snd", OK), ("rcv", OK, 63)]


def test_task_capability_as_ipc_destination():
    """A capability of the wrong kind (a Task) as destination: ENOT_EXISTENT, also through
    the raw ABI."""
    k = make_kernel()
    log = []

    async def body(t, sel):
        before = snapshot(k)
        log.append((await t.send(sel, words=[1])).error)
        log.append((await t.call(sel, words=[1])).error)
        log.append((await t.ipc(sel, MsgTag(words=1), SEND)).error)
        log.append((await t.ipc(sel, 0, RECEIVE)).error)
        log.append(snapshot(k) == before)

    task = k.new_task("t")
    task.new_thread(body, task.add_cap(k.new_task("victim")), name="b")
    assert k.run().reason == "done"
    assert log == [ENOT_EXISTENT] * 4 + [True]


def test_raw_abi_python_misuse_raises():
    k = make_kernel()
    log = []

    async def body(t):
        for args, exc in [((1, "tag", SEND), TypeError), ((1, 0, 16), ValueError),
                          ((1, 0, SEND, -1), ValueError), ((1, 0, SEND, 1 << 32), ValueError),
                          (("1", 0, SEND), TypeError)]:
            try:
                await t.ipc(*args)
            except exc:
                log.append(exc)

    k.new_task("t").new_thread(body, name="b")
    k.run()
    assert log == [TypeError, ValueError, ValueError, ValueError, TypeError]


# --- misuse of the Python API --------------------------------------------------------------

MISUSE = [
    ("selector str", lambda t, d: t.send("1", words=[1]), TypeError),
    ("selector float", lambda t, d: t.call(1.0), TypeError),
    ("selector None", lambda t, d: t.receive(None), TypeError),
    ("send timeout int", lambda t, d: t.send(d, send_timeout=5), TypeError),
    ("call timeout None", lambda t, d: t.call(d, receive_timeout=None), TypeError),
    ("wait timeout int", lambda t, d: t.wait(receive_timeout=0), TypeError),
    ("sleep int", lambda t, d: t.sleep(100), TypeError),
    ("reply_and_wait timeout", lambda t, d: t.reply_and_wait(receive_timeout=1.5), TypeError),
    ("word 2**64", lambda t, d: t.send(d, words=[1 << 64]), OverflowError),
    ("word 2**64 among others", lambda t, d: t.call(d, words=[1, 2, 1 << 64]), OverflowError),
    ("negative word", lambda t, d: t.send(d, words=[-1]), OverflowError),
    ("negative word among others", lambda t, d: t.reply(words=[0, -5]), OverflowError),
    ("word float", lambda t, d: t.send(d, words=[1.5]), TypeError),
    ("64 words", lambda t, d: t.send(d, words=list(range(64))), ValueError),
    ("negative Timeout.us", lambda t, d: t.sleep(Timeout.us(-1)), ValueError),
    ("label too large", lambda t, d: t.send(d, label=1 << 47), OverflowError),
]


@pytest.mark.parametrize("what, misuse, exc", MISUSE, ids=[m[0] for m in MISUSE])
def test_python_misuse_raises_where_it_happens(what, misuse, exc):
    """The exception is raised at the call, in the user's code, before any kernel entry:
    the thread can catch it, no simulated time passed, no kernel state changed."""
    k = make_kernel()
    log = []

    async def receiver(t):
        await t.wait()

    async def body(t, dest):
        t0, before = t.now, snapshot(k)
        try:
            await misuse(t, dest)
        except exc as e:
            log.append((type(e), t.now - t0, snapshot(k) == before))
        r = await t.send(dest, words=[1])     # the thread is fine and goes on
        log.append(r.error)

    rcv = k.new_task("r").new_thread(receiver, name="rcv")
    task = k.new_task("t")
    task.new_thread(body, task.add_cap(rcv), name="b")
    res = k.run()
    assert res.reason == "done"
    assert log == [(exc, 0, True), OK]


@pytest.mark.parametrize("what, misuse, exc", MISUSE, ids=[m[0] for m in MISUSE])
def test_uncaught_misuse_kills_the_thread_and_the_run_goes_on(what, misuse, exc):
    k = make_kernel()
    log = []

    async def bad(t, dest):
        await misuse(t, dest)
        log.append("bad went on")                 # never

    async def good(t):
        for i in range(3):
            await t.sleep(Timeout.cycles(1_000))
            log.append(i)

    async def receiver(t):
        await t.wait()

    rcv = k.new_task("r").new_thread(receiver, name="rcv")
    task = k.new_task("t")
    b = task.new_thread(bad, task.add_cap(rcv), name="bad")
    task.new_thread(good, name="good")
    res = k.run()
    assert res.reason == "done"
    assert log == [0, 1, 2]
    assert [th for th, _ in res.died] == [b]
    assert exc.__name__ in str(res.died[0][1])
    assert b.state_name == "dead"
    assert rcv.state_name == "receive_wait"       # nothing was sent
