"""The string fast path: a call that carries one string item to a receiver already
waiting, on the same CPU, with a buffer that takes the whole string, where both the
string and the buffer lie inside one mapping each and nothing falls due before the copy
is over (no preemption point is taken, no page faults).

It does what the general path does in that case (`ipc.ipc`'s send phase with its long
IPC, `ipc._send_long`: `longipc.copy_strings` and `longipc.end`; then its receive phase's
reply wait) in one frame: the same state words, registers, reply capability and simulated time, without a
`Transfer`, the copy's coroutine and the scheduler's pick. The receiver would be made
ready and picked at once (no ready thread of its priority or above): it is switched to
directly. Anything else takes the general path; `tests/test_fastpath.py` runs the same
programs both ways and compares every observable.
"""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import TYPE_CHECKING, cast

from .abi import BR_COUNT, NEVER, WORD_MASK, IpcError, StringItem
from .ipc import OP_CALL, _result_of_wait, ipc, resolve_send
from .longipc import BUFFER_BDR_SHIFT, STRING
from .memory import USER_SPACE_BITS
from .objects import Thread
from .result import IpcResult
from .sched import cancel_timer, quiet_result
from .states import DEAD, IPC_TRANSFER, READY, RECEIVE_WAIT

if TYPE_CHECKING:
    from ..user.context import UserContext

_SPACE_END = 1 << USER_SPACE_BITS
_TAG = 1 << 6  # no words, one typed item
OK = IpcError.OK
Trap = Generator[Thread | None, None, IpcResult]


@types.coroutine
def call_string(t: UserContext, dest: int, item: StringItem) -> Trap:
    """`t.call(dest, items=[item])` with no words, label, window, buffers or timeouts."""
    k = t._k
    th = t._th
    w0 = (item.length << 12 | STRING) & WORD_MASK  # (as `StringItem.words` writes it)
    slen = w0 >> 12
    saddr = item.addr & WORD_MASK
    cpu = th.cpu
    target = resolve_send(th, dest) if type(dest) is int else None
    if (target is not None and slen > 0 and saddr + slen <= _SPACE_END
            and not th.state & DEAD and th.xfer is None and not th.sendq
            and k.stop is None and cpu.action is None
            and (k.executing is None or k.executing is cpu)):
        dst, label, _gate = target
        # (A receiver in a closed wait for us takes the general path, as in `fastpath.call`.)
        if (dst.cpu is cpu and dst.state == RECEIVE_WAIT and dst.xfer is None
                and dst.partner is None
                and (dst.reply_caller is None or dst.reply_caller is th)
                and th.reply_caller is not dst and th.prio <= dst.prio and dst.rq_prio < 0
                and not cpu.bitmap >> dst.prio):
            # The receiver's first string buffer (`longipc.receive_buffers`) takes it all?
            utcb = dst.utcb
            br = utcb._br
            j = (utcb.bdr >> BUFFER_BDR_SHIFT) & 0x1F
            if br is not None and j + 1 < BR_COUNT and br[j] & 0xC == STRING:
                baddr, bsize = br[j + 1], br[j] >> 12
                ms = th.task.space.lookup(saddr)
                md = dst.task.space.lookup(baddr)
                if (baddr + bsize <= _SPACE_END and slen <= bsize
                        and ms is not None and ms.rights & 4
                        and ms.base + (1 << ms.order) - saddr >= slen
                        and md is not None and md.rights & 2
                        and md.base + (1 << md.order) - baddr >= slen):
                    costs = k.costs
                    kernel_buffer = k.copy == "kernel-buffer"
                    now = cpu.now + cpu.ipc_costs[0]  # the kernel entry
                    if kernel_buffer:
                        rate = costs.string_byte_kernel_buffer
                        if th.task is not dst.task:
                            now += costs.space_switch
                    else:
                        rate = costs.string_byte_window
                        now += costs.window_setup
                    end = cpu.slice_end if cpu.slice_end < cpu.next_event else cpu.next_event
                    after = now + int(slen * rate)
                    # The copy ends before anything falls due and no preemption point is
                    # taken after it: it is one piece, as `copy_strings` would copy it.
                    if (not (rate > 0 and end - now < slen * rate) and after < end
                            and not cpu.bitmap >> (th.prio + 1)):
                        mr = th.mr
                        mr[0] = w0
                        mr[1] = saddr
                        cpu.entries += 1
                        dst.state = IPC_TRANSFER
                        src = ms.phys + saddr - ms.base
                        dpa = md.phys + baddr - md.base
                        view = k.phys.view
                        if kernel_buffer:
                            view[dpa:dpa + slen] = bytes(view[src:src + slen])
                        else:
                            view[dpa:dpa + slen] = view[src:src + slen]
                        cpu.now = after
                        # `longipc.end`: the receiver gets the tag, the label, the reply
                        # capability and the string's return item, and becomes ready.
                        dst.in_words = None
                        dst.in_tag = _TAG
                        dst.in_label = label
                        dst.reply_caller = th  # (`set_reply_cap`: it held none, or ours)
                        dm = dst.mr
                        dm[0] = slen << 12 | STRING
                        dm[1] = baddr
                        dst.in_strings = (slen,)
                        if dst.timer is not None:  # (`_wake_receiver`)
                            cancel_timer(dst)
                        dst.partner = None
                        dst.state = READY
                        dst.wake_error = OK
                        # (`ipc.ipc`'s receive phase): wait for the reply; the receiver runs next.
                        th.partner = dst
                        th.in_words = None
                        th.in_tag = th.in_label = 0
                        th.state = RECEIVE_WAIT
                        yield dst  # the switch
                        quiet = quiet_result(th, cpu)  # (the typed fast path's exit)
                        if quiet is not None:
                            return quiet
                        cpu = th.cpu  # (it may have migrated meanwhile)
                        r = _result_of_wait(k, th)
                        if cpu.must_leave(th, r.error):
                            return cast(IpcResult, (yield from cpu.leave(th, r)))
                        return r
    tagraw = t._prepare_call(dest, (), 0, (item,), NEVER, NEVER, NEVER, None)
    return cast(IpcResult, (yield from ipc(k, th, OP_CALL, dest, tagraw, NEVER, NEVER)))
