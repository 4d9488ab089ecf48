"""The memory examples (examples/pager_hierarchy.py, shared_memory.py, prefetch_pager.py):
each built on a checked kernel (S19 invariants after every operation, events traced),
run, and its outcome asserted exactly: what the client read, what the consumer saw, how
many page faults there were, and the mapping database's trees; and each run through
`l4sim run FILE.py --check`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner

from helpers import EXAMPLES, load_example, make_kernel, thread_named, trace
from l4sim import Kernel, Rights
from l4sim.cli import main

thread = thread_named


def checked(module: ModuleType, **build_kw: Any) -> tuple[Kernel, Any]:
    k = make_kernel()                                   # check=True, trace=True
    assert k.check
    module.build(k, **build_kw)
    return k, k.run()


def page_faults(k: Kernel, name: str) -> list[str]:
    """The kernel's record of the page faults of thread `name`: 'write at 0x… -> pager'."""
    return [detail for _t, who, _e, detail in trace(k, "page fault") if who == name]


def blocked_names(res: Any) -> list[str]:
    return sorted(t.name for t in res.blocked)


# --- sigma0 -> pager -> client ------------------------------------------------------------


@pytest.fixture(scope="module")
def hierarchy() -> ModuleType:
    return load_example("pager_hierarchy")


def test_pager_hierarchy_client_reads_what_it_wrote(hierarchy: ModuleType) -> None:
    k, res = checked(hierarchy)
    assert res.reason == "done" and res.died == []
    assert blocked_names(res) == ["pager", "sigma0"]          # the two pagers idle in wait
    client = thread(k, "client")
    assert client.returned
    assert client.result["read_ok"] is True
    # The pager read the first word of every page through its own mapping of the frame:
    # the client's data, so both mappings name the same frames.
    assert client.result["pager_saw"] == [hierarchy.MAGIC + p for p in range(hierarchy.PAGES)]
    pages = [hierarchy.BUFFER + p * hierarchy.PAGE for p in range(hierarchy.PAGES)]
    assert hierarchy.faults_served(k) == pages                # the pager's log page
    # One write fault per page of the client, to the pager; one fault of the pager (its
    # log page), to sigma0; nothing else faulted.
    assert page_faults(k, "client") == [f"write at {p:#x} -> pager" for p in pages]
    assert page_faults(k, "pager") == [f"write at {hierarchy.LOG_PAGE:#x} -> sigma0"]
    assert {who for _t, who, _e, _d in trace(k, "page fault")} == {"client", "pager"}
    # The client's pages and the pager's pool pages are the same frames.
    ctask, ptask = client.task, thread(k, "pager").task
    for p, page in enumerate(pages):
        mine = ctask.space.lookup(page)
        pool = ptask.space.lookup(hierarchy.POOL + p * hierarchy.PAGE)
        assert mine is not None and pool is not None
        assert mine.parent is pool and mine.phys == pool.phys
        assert (mine.order, mine.rights) == (12, int(Rights.RW))


def test_pager_hierarchy_mapping_database(hierarchy: ModuleType) -> None:
    k, _ = checked(hierarchy)
    lines = k.mapdb.dump().splitlines()
    # sigma0 hands out the highest free frames first; the log page came 1:1 by its fault.
    assert lines == [
        "sigma0 0x0 64 MiB rwx (phys 0x0)",
        "  pager 0x10000 4 KiB rwx (phys 0x10000)",
        "  pager 0x40000000 4 KiB rwx (phys 0x3fff000)",
        "    client 0x100000 4 KiB rw- (phys 0x3fff000)",
        "  pager 0x40001000 4 KiB rwx (phys 0x3ffe000)",
        "    client 0x101000 4 KiB rw- (phys 0x3ffe000)",
        "  pager 0x40002000 4 KiB rwx (phys 0x3ffd000)",
        "    client 0x102000 4 KiB rw- (phys 0x3ffd000)",
        "  pager 0x40003000 4 KiB rwx (phys 0x3ffc000)",
        "    client 0x103000 4 KiB rw- (phys 0x3ffc000)",
    ]
    # One frame's tree: sigma0 -> pager -> client.
    assert k.mapdb.dump(frame=0x3ffe123) == (
        "sigma0 0x0 64 MiB rwx (phys 0x0)\n"
        "  pager 0x40001000 4 KiB rwx (phys 0x3ffe000)\n"
        "    client 0x101000 4 KiB rw- (phys 0x3ffe000)\n")
    # Only the tasks of the hierarchy hold memory: no anonymous-memory pager was made.
    assert "anon-pager" not in k.mapdb.dump()


def test_pager_hierarchy_report(hierarchy: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    k, res = checked(hierarchy)
    hierarchy.report(k, res)
    out = capsys.readouterr().out
    assert "pager   log page 0x10000 faulted in from sigma0" in out
    assert "pager   sigma0 gave frame 0x3fff000, at 0x40000000 here" in out
    assert "pager   write fault at 0x103000 -> map 0x40003000 to 0x103000" in out
    assert "client  read back 4 pages: all as written" in out
    assert "    client 0x103000 4 KiB rw- (phys 0x3ffc000)\n" in out


# --- producer/consumer over a shared page -----------------------------------------------


@pytest.fixture(scope="module")
def shared() -> ModuleType:
    return load_example("shared_memory")


def test_shared_memory_consumer_sees_every_record_in_order(shared: ModuleType) -> None:
    k, res = checked(shared)
    assert res.reason == "done" and res.died == []
    assert blocked_names(res) == ["anon-pager", "sigma0"]
    prod, cons = thread(k, "producer"), thread(k, "consumer")
    assert prod.returned and cons.returned
    assert len(shared.RECORDS) > shared.SLOTS                 # the slots wrapped around
    assert cons.result["seen"] == list(enumerate(shared.RECORDS))
    assert cons.result["private"] == b"".join(shared.RECORDS)
    assert prod.result["acks"] == list(range(len(shared.RECORDS)))
    # The page landed in the consumer's window, read-only as the producer sent it.
    assert cons.result["landed"] == (shared.VIEW, 12, int(Rights.R))


def test_shared_memory_is_one_frame_mapped_read_only(shared: ModuleType) -> None:
    k, _ = checked(shared)
    prod, cons = thread(k, "producer"), thread(k, "consumer")
    mine = prod.task.space.lookup(shared.SHARED)
    view = cons.task.space.lookup(shared.VIEW)
    assert mine is not None and view is not None
    assert view.parent is mine and view.phys == mine.phys
    assert view.rights == int(Rights.R)
    # What the consumer's mapping shows is what the producer wrote last into each slot.
    last = {seq % shared.SLOTS: (seq, data) for seq, data in enumerate(shared.RECORDS)}
    for slot, (seq, data) in last.items():
        at = view.phys + shared.slot_addr(slot)
        raw = k.phys.read(at, shared.HEADER + len(data))
        assert raw == seq.to_bytes(8, "little") + len(data).to_bytes(8, "little") + data
    # Both tasks got their own memory from the anonymous-memory pager, on fault.
    assert page_faults(k, "producer") == [f"write at {shared.SHARED:#x} -> anon-pager"]
    assert page_faults(k, "consumer") == [f"write at {shared.PRIVATE:#x} -> anon-pager"]


def test_shared_memory_mapping_database(shared: ModuleType) -> None:
    k, _ = checked(shared)
    assert k.mapdb.dump().splitlines() == [
        "sigma0 0x0 64 MiB rwx (phys 0x0)",
        "  anon-pager 0x400000000000 4 KiB rwx (phys 0x3fff000)",
        "    producer 0x200000 4 KiB rwx (phys 0x3fff000)",
        "      consumer 0x700000 4 KiB r-- (phys 0x3fff000)",
        "  anon-pager 0x400000001000 4 KiB rwx (phys 0x3ffe000)",
        "    consumer 0x300000 4 KiB rwx (phys 0x3ffe000)",
    ]


def test_shared_memory_many_records_wrap_several_times(shared: ModuleType) -> None:
    records = [bytes([i]) * (1 + i * 7 % 400) for i in range(40)]
    k, res = checked(shared, records=records)
    assert res.reason == "done" and res.died == []
    cons = thread(k, "consumer")
    assert cons.result["seen"] == list(enumerate(records))
    assert cons.result["private"] == b"".join(records)        # several private pages
    assert len(page_faults(k, "consumer")) == -(-len(b"".join(records)) // shared.PAGE)


def test_shared_memory_report(shared: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    k, res = checked(shared)
    shared.report(k, res)
    out = capsys.readouterr().out
    assert "consumer  page landed at 0x700000 (order 12); header 0x5a4ed, 7 slots" in out
    assert "producer  mapped 0x200000 to the consumer (read-only)" in out
    assert "consumer  read record 9 (28 bytes) from slot 2" in out
    assert "      consumer 0x700000 4 KiB r-- (phys 0x3fff000)\n" in out


# --- a pager that maps more than the faulting page ----------------------------------------


@pytest.fixture(scope="module")
def prefetch() -> ModuleType:
    return load_example("prefetch_pager")


@pytest.mark.parametrize("order, faults", [(12, 16), (14, 4), (16, 1)])
def test_prefetch_pager_fault_count(prefetch: ModuleType, order: int, faults: int) -> None:
    k, res = checked(prefetch, order=order)
    assert res.reason == "done" and res.died == []
    assert blocked_names(res) == ["pager", "sigma0"]
    assert prefetch.ACCESSES == 64 and prefetch.REGION // prefetch.PAGE == 16
    client = thread(k, "client")
    assert client.returned
    assert client.result["read"] == client.result["wrote"] == [0x1000 + i for i in range(64)]
    # 64 accesses over 16 pages: one fault per 2^order block, at the block's first access.
    blocks = [prefetch.BASE + j * (1 << order) for j in range(faults)]
    seen = prefetch.faults_of(k)
    assert [(addr, write, base) for _t, addr, write, base in seen] == [
        (b, True, b) for b in blocks]
    # The kernel's own count agrees with the pager's.
    assert page_faults(k, "client") == [f"write at {b:#x} -> pager" for b in blocks]
    # Each fault mapped one fpage of 2^order bytes, entered as 4 KiB page-table entries
    # (x86-64 has no 16 or 64 KiB pages): the whole buffer is mapped, page by page, onto
    # the pager's 64 KiB from sigma0, in order.
    pool = thread(k, "pager").task.space.lookup(prefetch.POOL)
    assert pool is not None
    maps = client.task.space.mappings()
    assert [(m.base, m.order, m.rights, m.phys) for m in maps] == [
        (prefetch.BASE + i * prefetch.PAGE, 12, int(Rights.RW), pool.phys + i * prefetch.PAGE)
        for i in range(16)]


def test_prefetch_pager_fewer_faults_than_pages(prefetch: ModuleType) -> None:
    counts = {}
    for order in (12, 13, 14, 15, 16):
        k, res = checked(prefetch, order=order)
        assert res.reason == "done" and res.died == []
        counts[order] = len(prefetch.faults_of(k))
    assert counts == {12: 16, 13: 8, 14: 4, 15: 2, 16: 1}


def test_prefetch_pager_mapping_database(prefetch: ModuleType) -> None:
    k, _ = checked(prefetch)                                   # the default: 16 KiB
    assert prefetch.ORDER == 14
    lines = k.mapdb.dump().splitlines()
    assert lines[0] == "sigma0 0x0 64 MiB rwx (phys 0x0)"
    # sigma0's 64 KiB (its highest free block) went to the pager as 4 KiB entries, and
    # each of them on to the client at the same offset of its buffer.
    want = []
    for i in range(16):
        want.append(f"  pager {0x10000000 + i * 0x1000:#x} 4 KiB rwx (phys {0x3ff0000 + i * 0x1000:#x})")
        want.append(f"    client {0x400000 + i * 0x1000:#x} 4 KiB rw- (phys {0x3ff0000 + i * 0x1000:#x})")
    assert lines[1:] == want
    assert "  pager 0x1000f000 4 KiB rwx (phys 0x3fff000)" in lines
    assert "    client 0x40f000 4 KiB rw- (phys 0x3fff000)" in lines
    # One frame's tree: sigma0 -> pager -> client.
    assert k.mapdb.dump(frame=0x3ff5008) == (
        "sigma0 0x0 64 MiB rwx (phys 0x0)\n"
        "  pager 0x10005000 4 KiB rwx (phys 0x3ff5000)\n"
        "    client 0x405000 4 KiB rw- (phys 0x3ff5000)\n")


def test_prefetch_pager_rejects_bad_orders(prefetch: ModuleType) -> None:
    for order in (11, 17):
        with pytest.raises(ValueError):
            prefetch.build(make_kernel(), order=order)


def test_prefetch_pager_report(prefetch: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    k, res = checked(prefetch)
    prefetch.report(k, res)
    out = capsys.readouterr().out
    assert "64 accesses across 16 pages; the pager maps 16 KiB per fault" in out
    assert "write fault at 0x404000 -> mapped 0x404000..0x407fff" in out
    assert "page faults: 4 (one per page would be 16)" in out


# --- through the command line ----------------------------------------------------------


@pytest.mark.parametrize("name, lines", [
    ("pager_hierarchy", ["client  read back 4 pages: all as written",
                         "    client 0x100000 4 KiB rw- (phys 0x3fff000)"]),
    ("shared_memory", ["consumer  read record 0 (10 bytes) from slot 0",
                       "      consumer 0x700000 4 KiB r-- (phys 0x3fff000)"]),
    ("prefetch_pager", ["page faults: 4 (one per page would be 16)",
                        "    client 0x40c000 4 KiB rw- (phys 0x3ffc000)"]),
])
def test_memory_examples_run_through_cli(name: str, lines: list[str]) -> None:
    result = CliRunner().invoke(main, ["run", str(EXAMPLES / f"{name}.py"), "--check"])
    assert result.exit_code == 0, result.output
    assert "report failed" not in result.output
    assert "reason" in result.output and "done" in result.output
    for line in lines:
        assert line in result.output
