"""Random interrupt programs (Hypothesis) against the rules of S12, on checked kernels.

A driver thread runs a random script of IRQ operations while the host triggers the IRQ
at random times. Whatever the interleaving:
- every delivery answers a trigger: deliveries <= triggers, and never more than one
  delivery per unmask (the source is masked after each delivery until unmasked);
- triggers while pending coalesce: no trigger is delivered twice;
- a delivery carries tag label -1 and the bound label, and no words;
- the kernel's invariants hold after every step (check=True), and the run ends.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from l4sim import IpcError, Kernel, Timeout

OPS = st.one_of(
    st.tuples(st.just("bind"), st.integers(0, 3)),
    st.just(("detach",)),
    st.just(("unmask",)),
    st.tuples(st.just("irq_receive"), st.integers(0, 20_000)),
    st.tuples(st.just("irq_wait"), st.integers(0, 20_000)),
    st.tuples(st.just("receive"), st.integers(0, 20_000)),
    st.tuples(st.just("compute"), st.integers(1, 30_000)),
    st.just(("trigger",)),
)


@settings(max_examples=150, deadline=None)
@given(script=st.lists(OPS, max_size=25),
       triggers=st.lists(st.integers(0, 300_000), max_size=12))
def test_random_interrupt_programs_keep_the_rules(script: list[tuple[Any, ...]],
                                                  triggers: list[int]) -> None:
    k = Kernel(check=True)
    irq = k.new_irq()
    task = k.new_task("drv")
    sel: list[int] = []
    events: list[tuple[str, Any]] = []   # in order: trigger, unmask, delivery
    bound_label: list[int | None] = [None]

    def host_trigger() -> None:
        events.append(("trigger", None))
        irq.trigger()

    async def driver(t: Any) -> None:
        s = sel[0]
        for op in script:
            kind = op[0]
            if kind == "bind":
                assert await t.irq_bind(s, op[1]) == IpcError.OK
                bound_label[0] = op[1]
            elif kind == "detach":
                assert await t.irq_detach(s) == IpcError.OK
                bound_label[0] = None
            elif kind == "unmask":
                events.append(("unmask", None))
                assert await t.irq_unmask(s) == IpcError.OK
            elif kind == "trigger":
                events.append(("trigger", None))
                assert await t.irq_trigger(s) == IpcError.OK
            elif kind == "compute":
                await t.compute(op[1])
            else:
                to = Timeout.cycles(op[1])
                if kind != "receive":
                    events.append(("unmask", None))
                r = await (t.irq_receive(s, receive_timeout=to) if kind == "irq_receive"
                           else t.irq_wait(s, receive_timeout=to) if kind == "irq_wait"
                           else t.receive(s, receive_timeout=to))
                assert r.error in (IpcError.OK, IpcError.RETIMEOUT)
                if r.ok:
                    assert (r.tag.label, r.words) == (-1, ())
                    assert r.label == bound_label[0]
                    events.append(("delivery", r.label))

    task.new_thread(driver, name="driver")
    sel.append(task.add_cap(irq))
    for at in triggers:
        k.at(at, host_trigger)
    res = k.run()
    assert res.reason == "done" and res.died == []

    deliveries = [e for e in events if e[0] == "delivery"]
    assert len(deliveries) <= sum(1 for e in events if e[0] == "trigger")
    # Masked after each delivery: between two deliveries there is an unmask.
    seen_delivery = False
    for kind, _ in events:
        if kind == "delivery":
            assert not seen_delivery, f"two deliveries without an unmask between: {events}"
            seen_delivery = True
        elif kind == "unmask":
            seen_delivery = False
    # At most one delivery is outstanding: the pending bit is one bit.
    assert not (irq.queued and not irq.pending)
