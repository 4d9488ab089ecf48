"""The IPC state machine, declared as data.

A thread's state word is a set of Fiasco's bits (`thread_state.cpp`). The states a
thread may be in and the transitions between them are listed here, once; every change
of a state word goes through `Kernel.set_state`, which (with `check=True`) refuses a
transition not listed here and records each one taken. `l4sim states` prints this
machine and writes it as Graphviz DOT.
"""

from __future__ import annotations

from typing import Final, NamedTuple

# Fiasco's bits
READY: Final = 0x1
SEND_WAIT: Final = 0x4          # queued in a partner's sender queue
RECEIVE_WAIT: Final = 0x8       # waiting for a sender (open, closed, reply of a call, sleep)
RECV_IN_PROGRESS: Final = 0x10  # receiver pulling a message from a queued sender (long IPC)
IPC_TRANSFER: Final = 0x20      # passively blocked while the partner copies (long IPC)
TRANSFER_FAILED: Final = 0x40
CANCEL: Final = 0x80
TIMEOUT: Final = 0x100
DEAD: Final = 0x200
DYING: Final = 0x400
IN_EXCEPTION: Final = 0x40000
LOCK_WAIT: Final = 0x2000       # l4sim's: a deleter waiting for its victim's transfer lock
DRQ_WAIT: Final = 0x1000000     # a sender whose handshake runs as a remote request (Fiasco's drq wait)
INACTIVE: Final = 0x0           # created, not yet started

BIT_NAMES: Final = {
    READY: "ready", SEND_WAIT: "send_wait", RECEIVE_WAIT: "receive_wait",
    RECV_IN_PROGRESS: "receive_in_progress", IPC_TRANSFER: "ipc_transfer",
    TRANSFER_FAILED: "transfer_failed", CANCEL: "cancel", TIMEOUT: "timeout",
    DEAD: "dead", DYING: "dying", IN_EXCEPTION: "in_exception", LOCK_WAIT: "lock_wait",
    DRQ_WAIT: "drq_wait",
}

# The declared states: name -> state word.
STATES: Final = {
    "inactive": INACTIVE,
    "ready": READY,
    "send_wait": SEND_WAIT,
    "receive_wait": RECEIVE_WAIT,
    "canceled": READY | CANCEL,
    "timed_out": READY | TIMEOUT,
    "dead": DEAD,
    # long IPC: the copier pulling a queued sender's message, the passive partner
    "receive_in_progress": READY | RECV_IN_PROGRESS,
    "ipc_transfer": IPC_TRANSFER,
    "transfer_dying": IPC_TRANSFER | DYING,
    # deleting a thread locked in a long IPC: wait until the lock is released
    "lock_wait": LOCK_WAIT,
    # several CPUs: the handshake with a partner on another CPU runs there
    "drq_wait": DRQ_WAIT,
}
STATE_NAMES: Final = {bits: name for name, bits in STATES.items()}


class Transition(NamedTuple):
    old: int
    new: int
    why: str


# The declared transitions, with the lecture's words for why each happens.
TRANSITIONS: Final = (
    Transition(INACTIVE, READY, "thread started"),
    # handshake: partner not ready, block
    Transition(READY, SEND_WAIT, "sender arrives first: enqueue in the receiver's sender queue and block"),
    Transition(READY, RECEIVE_WAIT,
               "receiver arrives first (or a call's send is done): prepare to receive and block"),
    # rendezvous: the partner completes our phase
    Transition(SEND_WAIT, READY, "receiver arrives and takes the queued sender's message"),
    Transition(SEND_WAIT, RECEIVE_WAIT, "receiver takes a call's message: switch atomically to receive"),
    Transition(RECEIVE_WAIT, READY, "sender arrives and delivers (or the reply's partner is gone)"),
    # abnormal ends before rendezvous
    Transition(SEND_WAIT, READY | CANCEL, "send canceled (ex_regs cancel, or the receiver deleted)"),
    Transition(RECEIVE_WAIT, READY | CANCEL, "receive canceled (ex_regs cancel)"),
    Transition(SEND_WAIT, READY | TIMEOUT, "send timeout expired"),
    Transition(RECEIVE_WAIT, READY | TIMEOUT, "receive timeout expired (sleep ends)"),
    Transition(READY | CANCEL, READY, "canceled thread resumes and reports the cancel"),
    Transition(READY | TIMEOUT, READY, "timed-out thread resumes and reports the timeout"),
    # the end
    Transition(READY, DEAD, "thread returned, died or was deleted"),
    Transition(SEND_WAIT, DEAD, "deleted while queued as a sender"),
    Transition(RECEIVE_WAIT, DEAD, "deleted while waiting to receive"),
    Transition(READY | CANCEL, DEAD, "deleted after a cancel, before it resumed"),
    Transition(READY | TIMEOUT, DEAD, "deleted after a timeout, before it resumed"),
    # long IPC: data transfer with page faults possible
    Transition(RECEIVE_WAIT, IPC_TRANSFER,
               "a sender with strings arrives: we sleep while it copies into our buffers"),
    Transition(SEND_WAIT, IPC_TRANSFER,
               "the receiver takes our long message and copies it (symmetric)"),
    Transition(READY, IPC_TRANSFER,
               "sender-driven: the receiver wakes the queued sender to copy, and blocks"),
    Transition(READY, READY | RECV_IN_PROGRESS,
               "symmetric: the receiver pulls the message of a queued sender (or resumes after a fault)"),
    Transition(READY | RECV_IN_PROGRESS, READY,
               "the pull is done, or paused for a nested page-fault IPC"),
    Transition(IPC_TRANSFER, READY, "the copier is done: the message is here, or was taken"),
    Transition(IPC_TRANSFER, RECEIVE_WAIT, "our long call was taken: wait for the reply"),
    Transition(IPC_TRANSFER, READY | CANCEL,
               "aborted after rendezvous (canceled, or the copier died)"),
    Transition(IPC_TRANSFER, IPC_TRANSFER | DYING,
               "deleted while locked in a transfer: the deletion waits for the lock"),
    Transition(IPC_TRANSFER | DYING, DEAD, "the transfer lock is released: deleted now"),
    Transition(IPC_TRANSFER, DEAD, "deleted while the lock is released for a page fault"),
    Transition(READY | RECV_IN_PROGRESS, DEAD, "deleted at a preemption point of its pull"),
    # the locked receiver: its deleter waits (and, with helping, lends its time to the copier)
    Transition(READY, LOCK_WAIT,
               "delete a thread locked in a long IPC: wait until the copier releases the lock"),
    Transition(LOCK_WAIT, READY, "the lock is released and the deletion done: delete returns"),
    Transition(LOCK_WAIT, DEAD, "deleted while waiting for a lock"),
    # several CPUs: the handshake with a partner on another CPU is a remote request (DRQ)
    Transition(READY, DRQ_WAIT,
               "the partner is on another CPU: the handshake runs there (a remote request)"),
    Transition(DRQ_WAIT, READY,
               "the remote handshake is done: delivered, or the partner gone or not waiting"),
    Transition(DRQ_WAIT, SEND_WAIT,
               "the remote handshake finds the receiver not ready: queued in its sender queue"),
    Transition(DRQ_WAIT, RECEIVE_WAIT,
               "the remote handshake delivers a call: switch atomically to the reply wait"),
    Transition(DRQ_WAIT, READY | CANCEL,
               "canceled while its remote handshake is in flight: the request finds it gone"),
    Transition(DRQ_WAIT, DEAD, "deleted while its remote handshake is in flight"),
)

ALLOWED: Final = frozenset((t.old, t.new) for t in TRANSITIONS)
WHY: Final = {(t.old, t.new): t.why for t in TRANSITIONS}

# Test-suite hook: when set to a set, every transition taken by any kernel with
# check=True is added to it, so the suite can list declared transitions it never reached.
coverage: set[tuple[int, int]] | None = None


def state_name(bits: int) -> str:
    """The declared name of a state word, or its bits spelled out."""
    name = STATE_NAMES.get(bits)
    if name is not None:
        return name
    return "|".join(n for b, n in BIT_NAMES.items() if bits & b) or "inactive"


def to_text() -> str:
    """The declared machine as a table: one line per transition."""
    width = max(len(n) for n in STATES)
    lines = [f"{len(STATES)} states, {len(TRANSITIONS)} transitions", ""]
    for name, bits in STATES.items():
        lines.append(f"  {name:<{width}}  {bits:#07x}")
    lines.append("")
    for t in TRANSITIONS:
        lines.append(f"  {state_name(t.old):>{width}} -> {state_name(t.new):<{width}}  {t.why}")
    return "\n".join(lines)


def to_dot() -> str:
    """The declared machine as Graphviz DOT (the lecture's 'Fiasco IPC state diagram')."""
    out = ["digraph ipc_states {", "  rankdir=LR;",
           '  node [shape=box, style=rounded, fontname="Helvetica"];']
    for name, bits in STATES.items():
        out.append(f'  {name} [label="{name}\\n{bits:#x}"];')
    for t in TRANSITIONS:
        why = t.why.replace('"', "'")
        out.append(f'  {state_name(t.old)} -> {state_name(t.new)} [label="{why}", fontsize=9];')
    out.append("}")
    return "\n".join(out) + "\n"
