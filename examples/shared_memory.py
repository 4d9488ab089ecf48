"""Producer/consumer over memory shared by flexpage mapping (lecture: "map a page to
another address space", shared memory plus IPC for the notification).

Both tasks get their own memory from the anonymous-memory pager (their threads are
created without `pager=`): the first touch of a page faults and the pager maps a
zero-filled page from sigma0.

1. The producer writes a header into its shared page (the first store faults it in)
   and maps the page to the consumer, read-only, by IPC: a MapItem in `items=`. The
   consumer receives with a receive window (`window=Fpage.mem(VIEW, 12)`): the page lands
   there, and the item's second word in the consumer's MRs tells what landed.
2. For every record the producer writes the record into the next slot of the page and
   notifies the consumer by IPC (a call carrying the slot number). The consumer reads the
   record with `t.load` through its own mapping of the same frame, copies it into its
   private memory, and replies (the ack): only then may the producer reuse a slot, so
   the slots can wrap around without losing a record.
3. An END message ends the stream; the consumer returns what it saw.

Record layout in a slot: sequence number (8 bytes), length (8 bytes), payload.

    python examples/shared_memory.py     # or: l4sim run examples/shared_memory.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Fpage, Kernel, MapItem, Rights, RunResult

PAGE = 4096
SHARED = 0x200000        # the shared page in the producer's space
VIEW = 0x700000          # where the consumer's receive window puts it
PRIVATE = 0x300000       # the consumer's private copy of every record
MAGIC = 0x5A4ED          # the header word: the page is a record ring
SLOT = 512               # bytes per slot; the header takes slot 0
SLOTS = PAGE // SLOT - 1
HEADER = 16              # sequence number and length before each payload

SHARE = 1                # producer -> consumer: the page (a map item)
RECORD = 2               # producer -> consumer: [slot] a new record is in the page
END = 3                  # producer -> consumer: no more records

RECORDS = [f"record {i}: {'ab' * i}{'!' * (i % 3)}".encode() for i in range(10)]

Log = list[tuple[int, str, str]]


def slot_addr(slot: int) -> int:
    """Offset of a slot in the shared page."""
    return (slot + 1) * SLOT


async def producer(t: Any, consumer_sel: int, records: list[bytes], log: Log) -> dict[str, Any]:
    await t.store_word(SHARED, MAGIC)                  # the first touch: a page fault
    await t.store_word(SHARED + 8, SLOTS)
    r = await t.call(consumer_sel, label=SHARE,
                     items=[MapItem(Fpage.mem(SHARED, 12, Rights.R), send_base=SHARED)])
    if not r.ok:
        raise RuntimeError(f"mapping the page failed: {r.error.name}")
    log.append((t.now, "producer", f"mapped {SHARED:#x} to the consumer (read-only)"))
    acks = []
    for seq, data in enumerate(records):
        if len(data) > SLOT - HEADER:
            raise ValueError(f"record {seq} does not fit a slot")
        slot = seq % SLOTS
        at = SHARED + slot_addr(slot)
        await t.store(at, seq.to_bytes(8, "little") + len(data).to_bytes(8, "little") + data)
        r = await t.call(consumer_sel, words=[slot], label=RECORD)    # notify, wait for ack
        if not r.ok:
            raise RuntimeError(f"notification {seq} failed: {r.error.name}")
        acks.append(r.words[0])
        log.append((t.now, "producer", f"record {seq} in slot {slot}, acked"))
    r = await t.call(consumer_sel, label=END)
    if not r.ok:
        raise RuntimeError(f"END failed: {r.error.name}")
    return {"acks": acks}


async def consumer(t: Any, log: Log) -> dict[str, Any]:
    r = await t.wait(window=Fpage.mem(VIEW, 12))       # where the shared page may land
    if not r.ok or r.tag.label != SHARE:
        raise RuntimeError(f"expected the shared page, got {r!r}")
    landed = Fpage(t.utcb.mr[len(r.words) + 1])        # the item as it landed here
    header = await t.load_word(VIEW), await t.load_word(VIEW + 8)
    log.append((t.now, "consumer", f"page landed at {landed.address:#x} "
                f"(order {landed.order}); header {header[0]:#x}, {header[1]} slots"))
    if header != (MAGIC, SLOTS):
        raise RuntimeError(f"bad header {header}")
    seen: list[tuple[int, bytes]] = []
    copied = PRIVATE
    r = await t.reply_and_wait()
    while True:
        if not r.ok:
            r = await t.wait()
            continue
        if r.tag.label == RECORD:
            at = VIEW + slot_addr(r.words[0])
            seq = await t.load_word(at)
            n = await t.load_word(at + 8)
            data = await t.load(at + HEADER, n)
            seen.append((seq, data))
            await t.store(copied, data)                  # our private memory (anonymous)
            copied += len(data)
            log.append((t.now, "consumer", f"read record {seq} ({n} bytes) from slot {r.words[0]}"))
            r = await t.reply_and_wait(words=[seq])
        elif r.tag.label == END:
            await t.reply()
            break
        else:
            r = await t.reply_and_wait()
    private = await t.load(PRIVATE, copied - PRIVATE)
    return {"landed": (landed.address, landed.order, landed.rights), "seen": seen,
            "private": private}


def build(k: Kernel, records: list[bytes] | None = None) -> None:
    log: Log = []
    ctask = k.new_task("consumer")
    cons = ctask.new_thread(consumer, log, name="consumer")
    ptask = k.new_task("producer")
    ptask.new_thread(producer, ptask.add_cap(cons), RECORDS if records is None else records, log,
                     name="producer")


def _thread(k: Kernel, name: str) -> Any:
    return next(th for th in k.threads.values() if th.name == name)


def report(k: Kernel, result: RunResult) -> None:
    prod, cons = _thread(k, "producer"), _thread(k, "consumer")
    records = prod.args[1]
    log = cons.args[0]
    print(f"producer -> consumer through one shared page; run ended {result.reason!r} "
          f"at {result.now} cycles")
    for time, who, text in log:
        print(f"  {time:>8}  {who:<8}  {text}")
    print("mapping database:")
    print(k.mapdb.dump(), end="")
    if result.reason != "done" or result.died:
        raise AssertionError(f"unexpected end of run: {result!r}")
    if not prod.returned or not cons.returned:
        raise AssertionError("producer or consumer did not finish")
    want = list(enumerate(records))
    if cons.result["seen"] != want:
        raise AssertionError(f"the consumer saw {cons.result['seen']}, expected {want}")
    if cons.result["private"] != b"".join(records):
        raise AssertionError("the consumer's private copy differs")
    if prod.result["acks"] != list(range(len(records))):
        raise AssertionError(f"acks {prod.result['acks']}")


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
