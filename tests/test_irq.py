"""Interrupt IPC (SPEC S12, the lecture's "Interrupt IPC" slide): an IRQ is a sender.

Every kernel here runs with check=True, so the invariants for queued IRQs (pending, bound
to the queue's owner, at priority 255, lending no priority) are checked after every step.
"""

from __future__ import annotations

from typing import Any

from l4sim import CapRights, IpcError, Kernel, Timeout

OK, E = IpcError.OK, IpcError


def _driver_kernel(body: Any, *args: Any, priority: int = 100) -> tuple[Kernel, Any, list[Any]]:
    """A kernel with one IRQ and a driver thread holding a capability to it (selector
    passed as the body's first argument after `log`)."""
    k = Kernel(check=True)
    irq = k.new_irq("dev")
    task = k.new_task("drv")
    log: list[Any] = []
    sel_box: list[int] = []

    async def wrapper(t: Any) -> Any:
        return await body(t, sel_box[0], log, *args)

    task.new_thread(wrapper, name="driver", priority=priority)
    sel_box.append(task.add_cap(irq))
    return k, irq, log


def _irq_msg(r: Any) -> tuple[Any, ...]:
    return (r.error, r.tag.label, r.label, r.words)


def test_irq_delivered_to_a_waiting_thread_immediately() -> None:
    async def driver(t: Any, irq: int, log: list[Any]) -> None:
        assert await t.irq_bind(irq, 0x77) == OK
        r = await t.irq_receive(irq)
        log.append((t.now, *_irq_msg(r)))

    k, irq, log = _driver_kernel(driver)
    k.at(50_000, irq.trigger)
    assert k.run().reason == "done"
    assert len(log) == 1
    now, err, tag_label, label, words = log[0]
    assert (err, tag_label, label, words) == (OK, -1, 0x77, ())
    assert 50_000 <= now < 50_000 + 1_000  # woken at the trigger, plus kernel costs
    assert irq.masked and not irq.pending  # masked after the delivery until unmasked


def test_irq_queued_while_busy_is_delivered_at_the_next_wait_ahead_of_lower_senders() -> None:
    k = Kernel(check=True)
    irq = k.new_irq()
    drv_task = k.new_task("drv")
    log: list[Any] = []
    sels: dict[str, int] = {}

    async def driver(t: Any) -> None:
        await t.irq_bind(sels["irq"], 5)
        await t.compute(100_000)          # busy: a sender and the IRQ queue meanwhile
        for _ in range(2):
            r = await t.wait()
            log.append(("got", r.tag.label, r.label, r.words))
            if r.tag.label != -1:
                await t.reply(words=[0])

    async def sender(t: Any, drv: int) -> None:
        await t.sleep(Timeout.cycles(10_000))
        r = await t.call(drv, words=[42])   # queues first, at priority 200
        log.append(("sender", r.error))

    drv = drv_task.new_thread(driver, name="driver", priority=100)
    sels["irq"] = drv_task.add_cap(irq)
    s_task = k.new_task("s")
    s_task.new_thread(sender, s_task.add_cap(drv), name="sender", priority=200)
    k.at(20_000, irq.trigger)
    assert k.run().reason == "done"
    assert log[0] == ("got", -1, 5, ())     # the IRQ, at 255, ahead of the priority-200 sender
    assert log[1][:2] == ("got", 0) and log[1][3] == (42,)
    assert ("sender", OK) in log


def test_a_queued_irq_lends_no_priority() -> None:
    async def driver(t: Any, irq: int, log: list[Any]) -> None:
        await t.irq_bind(irq, 1)
        await t.compute(30_000)
        log.append(t._th.prio)   # the IRQ is queued at 255 here
        r = await t.wait()
        log.append(r.tag.label)

    k, irq, log = _driver_kernel(driver, priority=10)
    k.at(10_000, irq.trigger)
    assert k.run().reason == "done"
    assert log == [10, -1]


def test_two_triggers_while_pending_deliver_once() -> None:
    async def driver(t: Any, irq: int, log: list[Any]) -> None:
        await t.irq_bind(irq, 9)
        await t.compute(50_000)            # three triggers arrive meanwhile
        r = await t.irq_receive(irq)
        log.append(_irq_msg(r))
        r = await t.irq_receive(irq, receive_timeout=Timeout.cycles(100_000))
        log.append(_irq_msg(r))

    k, irq, log = _driver_kernel(driver)
    for at in (10_000, 20_000, 30_000):
        k.at(at, irq.trigger)
    assert k.run().reason == "done"
    assert log == [(OK, -1, 9, ()), (E.RETIMEOUT, 0, 0, ())]


def test_no_delivery_while_masked_until_unmask() -> None:
    async def driver(t: Any, irq: int, log: list[Any]) -> None:
        await t.irq_bind(irq, 3)
        r = await t.irq_receive(irq)               # the first trigger; now masked
        log.append(("first", t.now, r.error))
        r = await t.receive(irq, receive_timeout=Timeout.cycles(200_000))  # no unmask
        log.append(("plain receive", r.error))
        await t.sleep(Timeout.cycles(10_000))
        assert await t.irq_unmask(irq) == OK       # the held trigger comes now
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append(("after unmask", r.error, r.tag.label, r.label))

    k, irq, log = _driver_kernel(driver)
    k.at(10_000, irq.trigger)
    k.at(40_000, irq.trigger)                      # while masked: pending
    assert k.run().reason == "done"
    assert log[0][0] == "first" and log[0][2] == OK
    assert log[1] == ("plain receive", E.RETIMEOUT)
    assert log[2] == ("after unmask", OK, -1, 3)


def test_irq_wait_is_an_open_wait_and_irq_receive_a_closed_one() -> None:
    k = Kernel(check=True)
    irq = k.new_irq()
    task = k.new_task("drv")
    log: list[Any] = []
    sels: dict[str, int] = {}

    async def driver(t: Any) -> None:
        await t.irq_bind(sels["irq"], 1)
        r = await t.irq_receive(sels["irq"], receive_timeout=Timeout.cycles(30_000))
        log.append(("closed", r.error, r.tag.label))   # the thread's send is not taken
        r = await t.irq_wait(sels["irq"])
        log.append(("open", r.error, r.words))

    async def sender(t: Any, drv: int) -> None:
        r = await t.send(drv, words=[7])
        log.append(("sent", r.error))

    drv = task.new_thread(driver, name="driver")
    sels["irq"] = task.add_cap(irq)
    task.new_thread(sender, task.add_cap(drv), name="sender")
    assert k.run().reason == "done"
    assert log == [("closed", E.RETIMEOUT, 0), ("open", OK, (7,)), ("sent", OK)]


def test_unbound_irq_stays_pending_and_is_delivered_after_binding() -> None:
    async def driver(t: Any, irq: int, log: list[Any]) -> None:
        await t.sleep(Timeout.cycles(50_000))      # the trigger comes while nobody is bound
        await t.irq_bind(irq, 4)
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append(_irq_msg(r))

    k, irq, log = _driver_kernel(driver)
    k.at(10_000, irq.trigger)
    assert k.run().reason == "done"
    assert log == [(OK, -1, 4, ())]


def test_bind_detach_and_rebind() -> None:
    k = Kernel(check=True)
    irq = k.new_irq()
    task = k.new_task("drv")
    log: list[Any] = []
    sel: list[int] = []

    async def first(t: Any) -> None:
        await t.irq_bind(sel[0], 1)
        await t.compute(20_000)                    # the trigger queues at us
        assert await t.irq_detach(sel[0]) == OK    # back to pending, not delivered here
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append(("first", r.error))

    async def second(t: Any) -> None:
        await t.sleep(Timeout.cycles(60_000))
        await t.irq_bind(sel[0], 2)                # the pending trigger arrives here
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append(("second", r.error, r.label))

    task.new_thread(first, name="first")
    task.new_thread(second, name="second")
    sel.append(task.add_cap(irq))
    k.at(5_000, irq.trigger)
    assert k.run().reason == "done"
    assert log == [("first", E.RETIMEOUT), ("second", OK, 2)]


def test_irq_of_a_dead_thread_stays_pending_for_the_next() -> None:
    k = Kernel(check=True)
    irq = k.new_irq()
    task = k.new_task("drv")
    log: list[Any] = []
    sel: list[int] = []

    async def short_lived(t: Any) -> None:
        await t.irq_bind(sel[0], 1)
        await t.compute(20_000)                    # the IRQ queues; then we end

    async def heir(t: Any) -> None:
        await t.sleep(Timeout.cycles(60_000))
        await t.irq_bind(sel[0], 2)
        r = await t.wait(receive_timeout=Timeout.zero())
        log.append((r.error, r.tag.label, r.label))

    task.new_thread(short_lived, name="short")
    task.new_thread(heir, name="heir")
    sel.append(task.add_cap(irq))
    k.at(5_000, irq.trigger)
    res = k.run()
    assert res.reason == "done" and res.died == []
    assert log == [(OK, -1, 2)]


def test_bad_irq_capabilities() -> None:
    k = Kernel(check=True)
    irq = k.new_irq()
    task = k.new_task("drv")
    log: list[Any] = []
    sels: dict[str, int] = {}

    async def body(t: Any) -> None:
        log.append(await t.irq_bind(sels["no_s"], 1))       # binding needs S
        log.append(await t.irq_bind(sels["thread"], 1))     # not an IRQ
        log.append(await t.irq_trigger(999))
        log.append(await t.irq_unmask(0))
        log.append((await t.irq_receive(sels["thread"])).error)
        log.append((await t.irq_wait(sels["no_s"], receive_timeout=Timeout.zero())).error)

    th = task.new_thread(body, name="b")
    sels["no_s"] = task.add_cap(irq, CapRights.ALL & ~CapRights.S)
    sels["thread"] = task.add_cap(th)
    assert k.run().reason == "done"
    assert log == [E.ENOT_EXISTENT, E.ENOT_EXISTENT, E.ENOT_EXISTENT, E.ENOT_EXISTENT,
                   E.ENOT_EXISTENT, E.RETIMEOUT]
    assert irq.thread is None


def test_deleting_an_irq_ends_a_closed_receive_on_it() -> None:
    async def driver(t: Any, irq: int, log: list[Any]) -> None:
        await t.irq_bind(irq, 1)
        r = await t.irq_receive(irq)
        log.append(r.error)

    k, irq, log = _driver_kernel(driver)
    k.at(10_000, lambda: k.delete(irq))
    assert k.run().reason == "done"
    assert log == [E.ENOT_EXISTENT]
    assert not irq.alive


def test_a_thread_waiting_for_an_irq_is_idle_not_deadlocked() -> None:
    async def driver(t: Any, irq: int, log: list[Any]) -> None:
        await t.irq_bind(irq, 1)
        await t.irq_receive(irq)

    k, _irq, _log = _driver_kernel(driver)
    res = k.run()
    assert res.reason == "done" and [t.name for t in res.blocked] == ["driver"]


def test_software_trigger_from_a_thread() -> None:
    k = Kernel(check=True)
    irq = k.new_irq()
    task = k.new_task("t")
    log: list[Any] = []
    sel: list[int] = []

    async def driver(t: Any) -> None:
        await t.irq_bind(sel[0], 0x10)
        r = await t.irq_receive(sel[0])
        log.append(("driver", r.tag.label, r.label))

    async def raiser(t: Any) -> None:
        log.append(("trigger", await t.irq_trigger(sel[0])))

    task.new_thread(driver, name="driver", priority=150)
    task.new_thread(raiser, name="raiser", priority=100)
    sel.append(task.add_cap(irq))
    assert k.run().reason == "done"
    # The driver has the higher priority: it runs at the trigger, before the raiser goes on.
    assert log == [("driver", -1, 0x10), ("trigger", OK)]
