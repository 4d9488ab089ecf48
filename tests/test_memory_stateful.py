"""S9, S10, S19: a stateful property test of the memory system. Hypothesis drives random
map / grant / unmap / task-delete operations among 3-4 tasks on a `Kernel(check=True)`
(the S19 memory invariants are checked after every kernel operation) and compares the
kernel with an independent model after every step.

The system: each task ("slot") has one worker thread that executes commands the test
gives it (as in tests/test_stateful.py: a Python command list per thread; an idle worker
sleeps forever and the host wakes it with a cancel). Workers receive flexpages with a
closed receive and a random `window=`, send `items=[MapItem(...)]`, unmap, delete other
tasks, ask sigma0 for fresh frames (its protocol, label -6) and read and write their
pages. Every physical frame holds a distinct pattern (its own address, repeated), written
by the task that got it from sigma0; one task also gets pages 1:1 from sigma0 by page
faults. Workers and probe threads have as pager a recording pager that logs each fault
and refuses it, so a fault is observable (the faulting thread is killed, the machine goes
on).

The model (`MemModel`) keeps, per task, page -> node (frame, rights, parent node) and the
derivation tree, and applies Fiasco's rules (FIASCO_FACTS.md, SPEC S9) page by page: the
landing rule; map rights = source rights & item rights, unmapped source pages skipped; a
target mapping that is a child of the same source frame is upgraded, one that is the
source itself or its ancestor is left alone (SPEC is silent: as the kernel does), any
other is unmapped first; grant moves the node (its children stay attached) with the item's
rights; unmap revokes from the descendants (R removes, only W/X downgrades), with
`self_too` also the caller's own; deleting a task unmaps what it mapped to others. Page
tables are counted as x86-64 builds them (a 4 KiB entry needs a page table per 2 MiB, a
directory per 1 GiB, a pointer table per 512 GiB, plus the top table) against each task's
quota: a map that would exceed it fails and changes nothing of that item. Every mapping
here is one 4 KiB entry (sigma0 hands out single frames); superpage entries are left to
tests/test_memory.py.

Checked after every rule: each task's page table (`task.space.mappings()`: address,
size, frame, rights, parent) equals the model; every readable page reads its frame's
pattern and every writable page takes a store; the operation's results (send / receive
errors, the fpage that landed, the number of mappings an unmap removed, sigma0's reply)
match the model; a probe thread reads (or writes) exactly where the model says it may,
and otherwise faults (a read or write fault, with the present bit when the page is mapped
without the right) to the recording pager and dies; no thread dies otherwise.

The four kernel bugs the machine found are fixed; their minimal programs are regression
tests at the end of this file. A bug found later goes into KNOWN_BUGS (the model then
avoids the step that triggers it) with an xfail(strict=True) regression test, until fixed.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from l4sim import (
    Fpage,
    IpcError,
    Kernel,
    KernelInvariantError,
    Label,
    MapItem,
    Task,
    Thread,
    Timeout,
    UserContext,
)
from l4sim.kernel.memory import DEFAULT_PT_QUOTA
from l4sim.kernel.states import RECEIVE_WAIT
from l4sim.lib.sigma0 import SIGMA0_FPAGE

E = IpcError
PAGE = 4096
ARENA = 0x100000                 # every task's main region: 16 pages (and the 1:1 frames)
NPAGES = 16
FAR = 1 << 30                    # a second region, in another 1 GiB: more page tables
NFAR = 4
FRESH = 0x400000                 # fresh frames that sigma0 hands out on request
SPACE_BITS = 47
R, W, X = 4, 2, 1
REFUSE = -12                     # the recording pager's refusal label
PF_WRITE, PF_PRESENT = 2, 1      # page-fault MR0 bits (l4sim.kernel.pagefault)
QUOTAS = (DEFAULT_PT_QUOTA, DEFAULT_PT_QUOTA, 5 * 4096, 4 * 4096)

# Kernel bugs this machine found (see the regression tests at the end of the file).
KNOWN_BUGS: frozenset[str] = frozenset()  # all four found so far are fixed


class KnownBug(Exception):
    """The model sees that this step would trigger a listed kernel bug."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _known(name: str) -> None:
    if name in KNOWN_BUGS:
        raise KnownBug(name)


def pattern(phys: int) -> bytes:
    """What frame `phys` holds: its address as a little-endian word, repeated."""
    return phys.to_bytes(8, "little") * (PAGE // 8)


# --- the model ------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """One mapping of one page: `slot`'s `page` -> frame `phys` with `rights`, derived from
    `parent` (None: from sigma0's root, the physical memory itself)."""

    slot: int
    page: int
    phys: int
    rights: int
    parent: Node | None
    children: dict[Node, None] = field(default_factory=dict)
    alive: bool = True

    def ancestors(self) -> list[Node]:
        out, p = [], self.parent
        while p is not None:
            out.append(p)
            p = p.parent
        return out


def _tables(page: int) -> tuple[tuple[int, int], ...]:
    """The x86-64 tables a 4 KiB entry at `page` needs below the top table."""
    return (21, page >> 21), (30, page >> 30), (39, page >> 39)


def _landing(sbase: int, so: int, rbase: int, ro: int, hot: int) -> tuple[int, int, int]:
    """FIASCO_FACTS: (source base, target base, order) of what is transferred."""
    if ro >= so:
        return sbase, rbase + ((hot % (1 << ro)) & ~((1 << so) - 1)), so
    return sbase + ((hot % (1 << so)) & ~((1 << ro) - 1)), rbase, ro


def _fpage(raw: int) -> tuple[int, int, int, int]:
    """(type, base with the bits below the order ignored, order, rights)."""
    kind, order, rights = (raw >> 4) & 3, (raw >> 6) & 0x3F, raw & 0xF
    base = raw >> 12 << 12
    if order < 64 and base & ((1 << order) - 1):
        _known("unaligned-fpage-fails")
        base &= ~((1 << order) - 1)
    return kind, base, order, rights


class MemModel:
    """What each task should have mapped, and the derivation tree."""

    def __init__(self) -> None:
        self.spaces: dict[int, dict[int, Node]] = {}
        self.quota: dict[int, int] = {}

    def add_task(self, slot: int, quota: int) -> None:
        self.spaces[slot] = {}
        self.quota[slot] = quota

    # --- tree operations

    def _remove_subtree(self, node: Node) -> int:
        if node.parent is not None:
            del node.parent.children[node]
        n = 0
        stack = [node]
        while stack:
            m = stack.pop()
            del self.spaces[m.slot][m.page]
            m.alive = False
            n += 1
            stack.extend(m.children)
            m.children = {}
        return n

    @staticmethod
    def _downgrade_subtree(node: Node, revoke: int) -> None:
        stack = [node]
        while stack:
            m = stack.pop()
            m.rights &= ~revoke
            stack.extend(m.children)

    def _fits(self, slot: int, pages: list[int]) -> bool:
        have = {t for p in self.spaces[slot] for t in _tables(p)}
        new = {t for p in pages for t in _tables(p)} - have
        return PAGE * (1 + len(have) + len(new)) <= self.quota[slot]

    # --- operations

    def sigma0_map(self, slot: int, phys: int, va: int) -> bool:
        """sigma0 maps the fresh frame `phys` at `va`, RWX. False: the map failed (quota)."""
        if not self._fits(slot, [va]):
            return False
        e = self.spaces[slot].get(va)
        if e is not None:
            if e.parent is None and e.phys == phys:
                e.rights |= R | W | X
                return True
            event("sigma0: replaces a mapping")
            self._remove_subtree(e)
        self.spaces[slot][va] = Node(slot, va, phys, R | W | X, None)
        return True

    def map(self, src: int, dst: int, fp_raw: int, hot: int, window: Fpage,
            grant: bool) -> int | None:
        """One map item: the landed fpage (0: nothing mapped), or None: the map failed."""
        _, base, order, frights = _fpage(fp_raw)
        if order < 12:
            return 0  # memory orders < 12 map nothing
        if base + (1 << order) > 1 << SPACE_BITS:
            return None
        if window.type == Fpage.SPECIAL:
            wbase, worder = 0, SPACE_BITS
        else:
            _, wbase, worder, _ = _fpage(window.raw)
            if worder < 12 or wbase + (1 << worder) > 1 << SPACE_BITS:
                return None
        s, t, o = _landing(base, order, wbase, worder, hot)
        sspace, dspace = self.spaces[src], self.spaces[dst]
        plan = []
        for i in range(1 << (o - 12)):
            node = sspace.get(s + i * PAGE)
            if node is not None and node.rights & frights:
                plan.append((node, t + i * PAGE))
        if not plan:
            return 0
        if not self._fits(dst, [tp for _, tp in plan]):
            event("map: page-table quota exceeded")
            return None
        for node, tp in plan:  # Fiasco's map loop: one page after the other
            if not node.alive:
                _known("stale-map-source")  # the kernel maps from the removed node
                continue
            rights = node.rights & frights
            e = dspace.get(tp)
            if e is not None:
                if e.parent is node and not grant:
                    event("map: upgrades a child of the same frame")
                    e.rights |= rights   # a child of the same frame: upgraded
                    continue
                if e is node or e in node.ancestors():
                    event("map: target is the source's ancestor")
                    continue             # it would unmap its own source
                event("map: replaces a mapping")
                self._remove_subtree(e)
            if grant:  # the node moves, its children stay attached
                del sspace[node.page]
                node.slot, node.page = dst, tp
                dspace[tp] = node
                event("grant: moves a node" + (" with children" if node.children else ""))
                if node.rights & ~rights:
                    self._downgrade_subtree(node, node.rights & ~rights)
            else:
                child = Node(dst, tp, node.phys, rights, node)
                node.children[child] = None
                dspace[tp] = child
        return t | o << 6 | Fpage.MEMORY << 4

    def unmap(self, slot: int, fp_raw: int, self_too: bool) -> int:
        """`t.unmap(fpage, self_too)`: the number of mappings removed."""
        kind, base, order, rights = _fpage(fp_raw)
        rights &= R | W | X
        if kind == Fpage.SPECIAL:
            base, order = 0, SPACE_BITS
        if order < 12 or not rights:
            return 0
        space = self.spaces[slot]
        pages = sorted(p for p in space if base <= p < base + (1 << order))
        snapshot = [space[p] for p in pages]
        removed = 0
        for node in snapshot:
            if not node.alive:
                if self_too and rights & R:
                    _known("unmap-removed-node")
                continue
            targets = [node] if self_too else list(node.children)
            for m in targets:
                if rights & R:
                    n = self._remove_subtree(m)
                    removed += n
                    if n > 1:
                        event("unmap: removes a subtree")
                else:
                    event("unmap: downgrades")
                    self._downgrade_subtree(m, rights)
        return removed

    def delete_task(self, slot: int) -> None:
        space = self.spaces[slot]
        for node in [space[p] for p in sorted(space)]:
            if not node.alive:
                _known("delete-removed-node")
                continue
            self._remove_subtree(node)
        assert not space
        del self.spaces[slot]

    def rights(self, slot: int, page: int) -> int | None:
        node = self.spaces[slot].get(page)
        return None if node is None else node.rights


# --- the machine ------------------------------------------------------------------------------


@dataclass(eq=False)
class Worker:
    slot: int
    task: Task
    th: Thread
    cmds: list[tuple[Any, ...]] = field(default_factory=list)
    results: list[tuple[Any, ...]] = field(default_factory=list)
    idle: bool = False


class MemoryMachine(RuleBasedStateMachine):
    """Random map / grant / unmap / delete among a few tasks, against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.k: Kernel = None  # type: ignore[assignment]
        self.model = MemModel()
        self.workers: dict[int, Worker] = {}        # slot -> its live worker
        self.sels: dict[tuple[int, str, int], int] = {}  # (in slot, "worker"/"task", of slot)
        self.s0sel: dict[int, int] = {}
        self.slot_of: dict[Task, int] = {}
        self.nslots = 0
        self.gen = itertools.count()
        self.fresh = itertools.count()
        self.msg_ids = itertools.count(1)
        self.faults: list[tuple[int, int, tuple[int, ...]]] = []  # (tid, tag label, words)
        self.failures: list[str] = []
        self.expected_deaths: set[Thread] = set()
        self.seen_died = 0
        self.broken = False

    # --- building the system

    @initialize(data=st.data())
    def build(self, data: st.DataObject) -> None:
        self.k = Kernel(check=True)
        ptask = self.k.new_task("pagers")
        self.recorder = ptask.new_thread(_recorder, self, name="recorder", priority=200, pager=None)
        self.nslots = data.draw(st.integers(3, 4), label="tasks")
        for slot in range(self.nslots):
            self._new_task(slot, data)
        # One task also gets pages 1:1 from sigma0 by page faults (VA = frame).
        loader_pages = data.draw(st.sets(st.integers(0, NPAGES - 1), max_size=3), label="1:1 pages")
        pages = [ARENA + i * PAGE for i in sorted(loader_pages)]
        if pages:
            w0 = self.workers[0]
            loader = w0.task.new_thread(_loader, pages, name="loader", pager=self.k.sigma0)
            self._run()
            if not loader.returned:
                raise AssertionError(f"the 1:1 loader did not finish: {loader.exit_reason}")
            self.k.delete(loader)
            for p in pages:
                self.model.spaces[0][p] = Node(0, p, p, R | W | X, None)
        # Each task asks sigma0 for a few fresh frames.
        for slot in range(self.nslots):
            for i in sorted(data.draw(st.sets(st.integers(0, NPAGES - 1), max_size=4),
                                      label=f"sigma0 pages of t{slot}")):
                self._sigma0(slot, ARENA + i * PAGE)
        self._verify()

    def _new_task(self, slot: int, data: st.DataObject) -> None:
        k = self.k
        quota = data.draw(st.sampled_from(QUOTAS), label=f"quota of t{slot}")
        task = k.new_task(f"t{slot}.{next(self.gen)}", pt_quota=quota)
        th = task.new_thread(_worker, self, slot, name=f"w{slot}", priority=100, pager=self.recorder)
        w = Worker(slot, task, th)
        self.workers[slot] = w
        self.slot_of[task] = slot
        self.model.add_task(slot, quota)
        self.s0sel[slot] = task.add_cap(k.sigma0)
        for other in self.workers:
            if other == slot:
                continue
            for a, b in ((slot, other), (other, slot)):
                ta = self.workers[a].task
                self.sels[a, "worker", b] = ta.add_cap(self.workers[b].th)
                self.sels[a, "task", b] = ta.add_cap(self.workers[b].task)

    # --- driving the workers

    def _give(self, w: Worker, cmd: tuple[Any, ...]) -> None:
        w.cmds.append(cmd)
        th = w.th
        if w.idle and th.state == RECEIVE_WAIT and th.partner in (th, None):
            self._guard(lambda: self.k.cancel(th))

    def _guard(self, fn: Any) -> Any:
        try:
            return fn()
        except KernelInvariantError:
            self.broken = True
            raise
        except BaseException as exc:
            self.broken = True
            raise AssertionError(f"an exception escaped the kernel: {exc!r}") from exc

    def _run(self) -> None:
        res = self._guard(self.k.run)
        if res.reason != "done":
            self.broken = True
            raise AssertionError(f"the run ended {res.reason}: {res!r}")
        self._check_deaths()
        for w in self.workers.values():
            if w.cmds or not w.idle:
                self.broken = True
                raise AssertionError(f"w{w.slot} did not finish its commands: {w.cmds}")

    def _result(self, w: Worker) -> tuple[Any, ...]:
        if len(w.results) != 1:
            self.broken = True
            raise AssertionError(f"w{w.slot} has results {w.results}, expected one")
        return w.results.pop()

    def _check_deaths(self) -> None:
        died = self.k.died
        for th, why in died[self.seen_died:]:
            if th not in self.expected_deaths:
                self.broken = True
                raise AssertionError(f"{th.name} died unexpectedly: {why}")
        self.seen_died = len(died)

    def fail(self, what: str) -> None:
        self.failures.append(f"@{self.k.now}: {what}")

    def _alive(self) -> list[int]:
        return sorted(self.workers)

    def _trial(self, fn: Any, *args: Any) -> tuple[MemModel, Any] | None:
        """Apply an operation to a copy of the model; None if it would trigger a known bug."""
        trial = copy.deepcopy(self.model)
        try:
            return trial, fn(trial, *args)
        except KnownBug as bug:
            event(f"avoided known kernel bug {bug.name}")
            return None

    # --- drawing operands

    @staticmethod
    def _page(data: st.DataObject, label: str) -> int:
        if _chance(data, 6, f"{label} far?"):
            return FAR + data.draw(st.integers(0, NFAR - 1), label=label) * PAGE
        return ARENA + data.draw(st.integers(0, NPAGES - 1), label=label) * PAGE

    def _mapped_page(self, data: st.DataObject, slot: int, label: str, odds: int = 5) -> int:
        """Mostly a page `slot` has mapped (an operation on it does something), else any."""
        mapped = sorted(self.model.spaces[slot])
        if mapped and not _chance(data, odds, f"{label} any page?"):
            return data.draw(st.sampled_from(mapped), label=label)
        return self._page(data, label)

    @staticmethod
    def _aligned(data: st.DataObject, page: int, order: int) -> int:
        if "unaligned-fpage-fails" not in KNOWN_BUGS and _chance(data, 5, "unaligned?"):
            return page  # the bits below the order must be ignored
        return page & ~((1 << order) - 1)

    _RIGHTS = (R | W | X, R | W | X, R | W, R | W, R, R | X, W, X, W | X, 0)

    def _item(self, data: st.DataObject, src: int, anchor: int | None) -> tuple[int, int, bool]:
        order = data.draw(st.sampled_from([12, 12, 12, 13, 13, 14, 15, 16, 11]), label="order")
        page = anchor if anchor is not None else self._mapped_page(data, src, "fpage")
        rights = data.draw(st.sampled_from(self._RIGHTS), label="item rights")
        fp = Fpage.mem(self._aligned(data, page, order), order, rights)
        if not _chance(data, 5, "any send base?"):
            hot = ARENA + data.draw(st.integers(0, NPAGES - 1), label="send base") * PAGE
        else:
            hot = data.draw(st.integers(0, (1 << 23) - 1), label="any send base") & ~(PAGE - 1)
        return fp.raw, hot, _chance(data, 4, "grant?")

    def _window(self, data: st.DataObject, dst: int) -> Fpage:
        kind = data.draw(st.sampled_from(["arena"] * 6 + ["far", "all"]), label="window")
        if kind == "all":
            return Fpage.all()
        if kind == "far":
            order = data.draw(st.integers(12, 13), label="window order")
            return Fpage.mem(FAR, order)
        order = data.draw(st.sampled_from([12, 12, 13, 14, 15, 16]), label="window order")
        page = self._mapped_page(data, dst, "window page", odds=2)  # mostly over a mapping
        return Fpage.mem(self._aligned(data, page, order), order)

    # --- rules

    @precondition(lambda self: len(self.workers) >= 2)
    @rule(data=st.data())
    def map_items(self, data: st.DataObject) -> None:
        """The worker of one task sends 1-2 map or grant items to the worker of another,
        which receives them in a random window."""
        self._map(data, derived=False)

    @precondition(lambda self: len(self.workers) >= 2)
    @rule(data=st.data())
    def map_on(self, data: st.DataObject) -> None:
        """The same, mostly of pages the sender got from another task: deeper trees."""
        self._map(data, derived=True)

    def _map(self, data: st.DataObject, derived: bool) -> None:
        alive = self._alive()
        anchor = None
        derived_pages = [(s, p) for s in alive for p, n in sorted(self.model.spaces[s].items())
                         if n.parent is not None] if derived else []
        if derived_pages:
            # A page the sender got from another task, mostly back to a task it came
            # from: a task's page derived from its own other page (a cycle through tasks).
            src, anchor = data.draw(st.sampled_from(derived_pages), label="from, page")
            others = [s for s in alive if s != src]
            owners = sorted({a.slot for a in self.model.spaces[src][anchor].ancestors()} - {src})
            dst = data.draw(st.sampled_from(owners if owners and not _chance(data, 3, "onwards?")
                                            else others), label="to")
        else:
            src = data.draw(st.sampled_from(alive), label="from")
            dst = data.draw(st.sampled_from([s for s in alive if s != src]), label="to")
        items = [self._item(data, src, anchor if i == 0 else None)
                 for i in range(data.draw(st.integers(1, 2), label="items"))]
        window = self._window(data, dst)
        trial = self._trial(_map_all, src, dst, items, window)
        if trial is None:
            return
        model, (ok, landed) = trial
        ws, wd = self.workers[src], self.workers[dst]
        msg = next(self.msg_ids)
        send = ("send", self.sels[src, "worker", dst], msg,
                [MapItem(Fpage(raw), send_base=hot, grant=grant) for raw, hot, grant in items])
        recv = ("recv", self.sels[dst, "worker", src], window)
        for w, cmd in ((wd, recv), (ws, send)) if data.draw(st.booleans()) else ((ws, send), (wd, recv)):
            self._give(w, cmd)
        self._run()
        self.model = model
        _, serr = self._result(ws)
        _, rerr, words, rlanded = self._result(wd)
        want = E.OK if ok else E.SEMAPFAILED
        if serr != want or rerr != (want | 1 if want else E.OK):
            self.fail(f"map {_items_text(items)} w{src} -> w{dst} window {window!r}: send {serr!r}, "
                      f"receive {rerr!r}, expected {want!r}")
        if rerr == E.OK:
            if words != (msg,):
                self.fail(f"the map message arrived with words {words}, sent ({msg},)")
            got = [x & ~0xF for x in rlanded]
            if got != landed:
                self.fail(f"map {_items_text(items)} window {window!r}: landed "
                          f"{[hex(x) for x in got]}, expected {[hex(x) for x in landed]}")
        self._verify()

    @rule(data=st.data())
    def unmap(self, data: st.DataObject) -> None:
        """A worker unmaps a flexpage (random rights, with or without self_too)."""
        if not self.workers:
            return
        slot = data.draw(st.sampled_from(self._alive()), label="unmapper")
        rights = data.draw(st.sampled_from([R, R | W | X, R | W, W, X, W | X, R | X, 0]), label="rights")
        if _chance(data, 10, "all?"):
            fp, self_too = Fpage(63 << 6 | rights), False  # "all"; self_too would take the caps
        else:
            order = data.draw(st.sampled_from([12, 12, 13, 14, 16, 20]), label="unmap order")
            space = self.model.spaces[slot]
            parents = sorted(p for p, n in space.items() if n.children)
            if parents and not _chance(data, 3, "not a page with children?"):
                page = data.draw(st.sampled_from(parents), label="unmap page")  # revoke
            else:
                page = self._mapped_page(data, slot, "unmap page")
            fp = Fpage.mem(self._aligned(data, page, order), order, rights)
            self_too = data.draw(st.booleans(), label="self_too")
        trial = self._trial(MemModel.unmap, slot, fp.raw, self_too)
        if trial is None:
            return
        model, n_expected = trial
        w = self.workers[slot]
        self._give(w, ("unmap", fp, self_too))
        self._run()
        self.model = model
        _, n = self._result(w)
        if n != n_expected:
            self.fail(f"w{slot} unmap {fp!r} self_too={self_too}: removed {n}, expected {n_expected}")
        self._verify()

    @rule(data=st.data())
    def sigma0_request(self, data: st.DataObject) -> None:
        """A worker asks sigma0 for a fresh frame at a page (maybe over a mapped one)."""
        if not self.workers:
            return
        slot = data.draw(st.sampled_from(self._alive()), label="client")
        self._sigma0(slot, self._page(data, "sigma0 page"))
        self._verify()

    def _sigma0(self, slot: int, va: int) -> None:
        phys = FRESH + next(self.fresh) * PAGE
        trial = self._trial(MemModel.sigma0_map, slot, phys, va)
        if trial is None:
            return
        model, ok = trial
        w = self.workers[slot]
        self._give(w, ("sigma0", self.s0sel[slot], phys, va))
        self._run()
        self.model = model
        _, err, label = self._result(w)
        want = (E.OK, 0) if ok else (E.REMAPFAILED, None)
        if (err, label if ok else None) != want:
            self.fail(f"w{slot} sigma0 request {phys:#x} at {va:#x}: {err!r} label {label}, "
                      f"expected {want}")

    @rule(data=st.data())
    def delete_task(self, data: st.DataObject) -> None:
        """A task is deleted, by the host or by the worker of another task."""
        if not self.workers or not _chance(data, 4, "delete now?"):
            return  # rarer than the other rules: each one empties a task
        alive = self._alive()
        slot = data.draw(st.sampled_from(alive), label="victim")
        others = [s for s in alive if s != slot]
        by = data.draw(st.sampled_from([None, *others]), label="deleted by")
        trial = self._trial(MemModel.delete_task, slot)
        if trial is None:
            return
        model, _ = trial
        w = self.workers.pop(slot)
        self.expected_deaths.add(w.th)
        if by is None:
            self._guard(lambda: self.k.delete(w.task))
        else:
            self._give(self.workers[by], ("delete", self.sels[by, "task", slot]))
        self._run()
        self.model = model
        if by is not None:
            _, err = self._result(self.workers[by])
            if err != E.OK:
                self.fail(f"w{by} deleting t{slot}: {err!r}")
        if w.task.alive or w.th.alive:
            self.fail(f"t{slot} or its worker is still alive after its deletion")
        del self.slot_of[w.task]
        self._verify()

    @precondition(lambda self: len(self.workers) < self.nslots)
    @rule(data=st.data())
    def new_task(self, data: st.DataObject) -> None:
        """A deleted task's slot gets a new, empty task."""
        slot = data.draw(st.sampled_from([s for s in range(self.nslots) if s not in self.workers]))
        self._new_task(slot, data)
        self._verify()

    @rule(data=st.data())
    def probe(self, data: st.DataObject) -> None:
        """A new thread in a task reads (or writes) one word of a page: it must succeed
        exactly where the model says, and otherwise fault to the recording pager."""
        if not self.workers:
            return
        slot = data.draw(st.sampled_from(self._alive()), label="probed task")
        offset = data.draw(st.integers(0, PAGE // 8 - 1), label="word") * 8
        addr = self._mapped_page(data, slot, "probe page", odds=2) + offset
        write = data.draw(st.booleans(), label="write?")
        page = addr & ~(PAGE - 1)
        rights = self.model.rights(slot, page)
        allowed = rights is not None and bool(rights & (W if write else R))
        node = self.model.spaces[slot].get(page)
        data_word = pattern(node.phys)[addr - page:addr - page + 8] if node is not None else bytes(8)
        th = self.workers[slot].task.new_thread(_probe, addr, write, data_word, name="probe",
                                                priority=100, pager=self.recorder)
        self.expected_deaths.add(th)
        nfaults = len(self.faults)
        self._run()
        what = f"t{slot} {'write' if write else 'read'} at {addr:#x} (model rights {rights})"
        if allowed:
            if not th.returned:
                self.fail(f"{what}: died ({th.exit_reason}), expected it to succeed")
            elif not write and th.result != data_word:
                self.fail(f"{what}: read {th.result.hex()}, expected {data_word.hex()}")
            if len(self.faults) != nfaults:
                self.fail(f"{what}: faulted {self.faults[nfaults:]}")
        else:
            bits = (PF_WRITE if write else 0) | (PF_PRESENT if rights is not None else 0)
            want = [(th.tid, Label.PAGE_FAULT, addr & ~7 | bits)]
            got = [(tid, lbl, words[0]) for tid, lbl, words in self.faults[nfaults:]]
            if th.returned or got != want:
                self.fail(f"{what}: returned {th.returned}, faults {got}, expected {want}")
        if th.alive:
            self._guard(lambda: self.k.delete(th))

    # --- checks

    def _verify(self) -> None:
        """The page tables equal the model, and every worker reads and writes exactly
        its pages."""
        self.compare_page_tables()
        expect: dict[int, list[tuple[int, bytes | None]]] = {}
        for slot, w in self.workers.items():
            todo = []
            for page, node in sorted(self.model.spaces[slot].items()):
                if node.rights & (R | W):
                    todo.append((page, node.rights & R != 0, node.rights & W != 0))
            expect[slot] = [(p, pattern(self.model.spaces[slot][p].phys) if r else None)
                            for p, r, _ in todo]
            if todo:
                self._give(w, ("access", todo))
        self._run()
        for slot, w in self.workers.items():
            if not expect[slot]:
                continue
            _, got = self._result(w)
            for (page, want), data in zip(expect[slot], got, strict=True):
                if data != want:
                    self.fail(f"w{slot} read {page:#x}: {data[:8].hex() if data else data}, "
                              f"expected {want[:8].hex() if want else want}")

    @invariant()
    def compare_page_tables(self) -> None:
        if self.k is None:
            return
        if set(self.model.spaces) != set(self.workers):
            raise self._bad(AssertionError(f"model tasks {sorted(self.model.spaces)}, "
                                           f"live tasks {sorted(self.workers)}"))
        for slot, w in self.workers.items():
            kernel = {m.base: (m.order, m.phys, m.rights, self._parent_key(m))
                      for m in w.task.space.mappings()}
            model = {p: (12, n.phys, n.rights, None if n.parent is None
                         else (n.parent.slot, n.parent.page))
                     for p, n in self.model.spaces[slot].items()}
            if kernel != model:
                diff = [f"  {p:#x}: kernel {_entry(kernel.get(p))}, model {_entry(model.get(p))}"
                        for p in sorted(set(kernel) | set(model)) if kernel.get(p) != model.get(p)]
                raise self._bad(AssertionError(f"t{slot}'s page table differs from the model:\n"
                                               + "\n".join(diff)))

    def _parent_key(self, m: Any) -> tuple[int, int] | None:
        p = m.parent
        if p is None:
            return (-1, -1)  # a root outside sigma0: never right
        if p.space.task is self.k.sigma0.task:
            return None
        return (self.slot_of.get(p.space.task, -2), p.base)

    def _bad(self, exc: BaseException) -> BaseException:
        self.broken = True
        return exc

    @invariant()
    def no_failures(self) -> None:
        if self.failures:
            raise self._bad(AssertionError("\n".join(self.failures)))

    def teardown(self) -> None:
        if self.k is None:
            return
        for th in list(self.k.threads.values()):
            coro = getattr(th, "coro", None)
            if coro is not None:
                coro.close()


def _chance(data: st.DataObject, n: int, label: str) -> bool:
    """True about once in `n` draws (the rare case is the largest value, which is not
    what Hypothesis tries first)."""
    return data.draw(st.integers(0, n - 1), label=label) == n - 1


def _map_all(model: MemModel, src: int, dst: int, items: list[tuple[int, int, bool]],
             window: Fpage) -> tuple[bool, list[int]]:
    """The items of one message in order; a failed one ends it (the earlier ones stay)."""
    landed: list[int] = []
    for raw, hot, grant in items:
        got = model.map(src, dst, raw, hot, window, grant)
        if got is None:
            return False, landed
        landed.append(got)
    return True, landed


def _items_text(items: list[tuple[int, int, bool]]) -> str:
    return ", ".join(f"{'grant' if g else 'map'} {Fpage(raw)!r} @{hot:#x}" for raw, hot, g in items)


def _entry(e: tuple[Any, ...] | None) -> str:
    if e is None:
        return "-"
    order, phys, rights, parent = e
    return f"{1 << order >> 10} KiB -> {phys:#x} rights {rights} from {parent}"


# --- thread bodies -------------------------------------------------------------------------


async def _worker(t: UserContext, m: MemoryMachine, slot: int) -> None:
    w = m.workers[slot]
    while True:
        if not w.cmds:
            w.idle = True
            r = await t.sleep(Timeout.never())
            w.idle = False
            if r.error != E.RECANCELED:
                m.fail(f"w{slot}'s idle sleep ended {r.error!r}")
            continue
        cmd = w.cmds.pop(0)
        op = cmd[0]
        if op == "recv":
            _, src, window = cmd
            r = await t.receive(src, window=window)
            tag = r.tag
            mr = t.utcb.mr
            landed = [mr[tag.words + 2 * i + 1] for i in range(tag.items)]
            w.results.append((op, r.error, r.words, landed))
        elif op == "send":
            _, dst, msg, items = cmd
            r = await t.send(dst, words=[msg], items=items)
            w.results.append((op, r.error))
        elif op == "unmap":
            w.results.append((op, await t.unmap(cmd[1], self_too=cmd[2])))
        elif op == "sigma0":
            _, s0, phys, va = cmd
            r = await t.call(s0, words=[SIGMA0_FPAGE, Fpage.mem(phys, 12).raw], label=Label.SIGMA0,
                             window=Fpage.mem(va, 12))
            if r.ok and r.tag.label >= 0:
                await t.store(va, pattern(phys))  # the owner fills its frame
            w.results.append((op, r.error, r.tag.label))
        elif op == "access":
            todo = cmd[1]
            out: list[bytes | None] = []
            for page, readable, writable in todo:
                data = await t.load(page, PAGE) if readable else None
                if writable:  # write the frame's pattern back: the data stay as they are
                    node = m.model.spaces[slot][page]
                    await t.store(page + 8 * slot, pattern(node.phys)[:8])
                out.append(data)
            w.results.append((op, out))
        elif op == "delete":
            w.results.append((op, await t.delete(cmd[1])))
        else:  # pragma: no cover
            m.fail(f"unknown command {cmd}")


async def _recorder(t: UserContext, m: MemoryMachine) -> None:
    """A pager that records each fault and refuses it (the faulting thread dies)."""
    r = await t.wait()
    while True:
        if r.error:
            r = await t.wait()
            continue
        m.faults.append((r.label, r.tag.label, r.words))
        r = await t.reply_and_wait(label=REFUSE)


async def _loader(t: UserContext, pages: list[int]) -> None:
    """Touches pages with pager=sigma0: each write fault maps the frame 1:1."""
    for p in pages:
        await t.store(p, pattern(p))


async def _probe(t: UserContext, addr: int, write: bool, data: bytes) -> bytes | None:
    if write:
        await t.store(addr, data)
        return None
    return await t.load(addr, 8)


# --- the test ----------------------------------------------------------------------------------

MACHINE = settings(max_examples=200, stateful_step_count=20, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def test_random_map_grant_unmap_delete_match_the_model() -> None:
    run_state_machine_as_test(MemoryMachine, settings=MACHINE)


# --- regressions: the kernel bugs the machine found (KNOWN_BUGS) ---------------------------------


def _two_tasks(body_a: Any, body_b: Any) -> tuple[Kernel, Task, Task, Thread, Thread]:
    """Tasks a and b with one thread each (no pager). Each body gets a dict: "a" / "b"
    the other thread's selector, "s0" its own task's selector for sigma0."""
    k = Kernel(check=True)
    a, b = k.new_task("a"), k.new_task("b")
    env_a: dict[str, int] = {}
    env_b: dict[str, int] = {}
    ta = a.new_thread(body_a, env_a, name="A", pager=None)
    tb = b.new_thread(body_b, env_b, name="B", pager=None)
    env_a["b"], env_b["a"] = a.add_cap(tb), b.add_cap(ta)
    env_a["s0"], env_b["s0"] = a.add_cap(k.sigma0), b.add_cap(k.sigma0)
    return k, a, b, ta, tb


async def _from_sigma0(t: UserContext, s0: int, phys: int, va: int, order: int = 12) -> None:
    """Get frames [phys, phys + 2^order) from sigma0 at `va` and fill them with their patterns."""
    r = await t.call(s0, words=[SIGMA0_FPAGE, Fpage.mem(phys, order).raw], label=Label.SIGMA0,
                     window=Fpage.mem(va, order))
    assert r.ok and r.tag.label >= 0, r
    for i in range(1 << (order - 12)):
        await t.store(va + i * PAGE, pattern(phys + i * PAGE))


def _table(task: Task) -> list[tuple[int, int, int]]:
    return [(m.base, m.order, m.phys) for m in task.space.mappings()]


def test_sigma0_mapping_a_new_frame_over_its_own_mapping_replaces_it() -> None:
    async def body(t: UserContext, env: dict[str, int]) -> bytes:
        await _from_sigma0(t, env["s0"], 0x200000, 0x100000)
        await _from_sigma0(t, env["s0"], 0x201000, 0x100000)  # another frame, same page
        return await t.load(0x100000, 8)

    async def idle(t: UserContext, env: dict[str, int]) -> None:
        pass

    k, a, _, ta, _ = _two_tasks(body, idle)
    k.run()
    assert _table(a) == [(0x100000, 12, 0x201000)]
    assert ta.result == pattern(0x201000)[:8]
    assert k.phys.read(0x200000, 8) == pattern(0x200000)[:8]  # the old frame is untouched


def test_mapping_another_part_of_a_superpage_over_its_child_maps_the_new_frame() -> None:
    """The kernel took this for an upgrade (same parent node, another frame) before the
    upgrade checked the frame."""
    async def body_a(t: UserContext, env: dict[str, int]) -> None:
        await _from_sigma0(t, env["s0"], 0x600000, 0x400000, order=21)  # one 2 MiB node
        for page in (0x400000, 0x401000):  # two of its pages, one after the other, to one page of b
            await t.send(env["b"], items=[MapItem(Fpage.mem(page, 12, R), send_base=0)])

    async def body_b(t: UserContext, env: dict[str, int]) -> bytes:
        for _ in range(2):
            await t.receive(env["a"], window=Fpage.mem(0x300000, 12))
        return await t.load(0x300000, 8)

    k, a, b, _, tb = _two_tasks(body_a, body_b)
    k.run()
    assert _table(a) == [(0x400000, 21, 0x600000)]
    assert _table(b) == [(0x300000, 12, 0x601000)]
    assert tb.result == pattern(0x601000)[:8]


def _cycle_a(then: Any) -> Any:
    """a's page 0x100000 goes to b at 0x300000, and b maps it back to a at 0x101000: a's
    0x101000 is derived (through b) from a's 0x100000; then `then(t, env)`."""
    async def body_a(t: UserContext, env: dict[str, int]) -> Any:
        await _from_sigma0(t, env["s0"], 0x200000, 0x100000)
        await t.send(env["b"], items=[MapItem(Fpage.mem(0x100000, 12))])
        await t.receive(env["b"], window=Fpage.mem(0x101000, 12))
        return await then(t, env)

    return body_a


async def _cycle_b(t: UserContext, env: dict[str, int]) -> None:
    await t.receive(env["a"], window=Fpage.mem(0x300000, 12))
    await t.send(env["a"], items=[MapItem(Fpage.mem(0x300000, 12))])


def test_unmap_self_too_of_pages_derived_from_each_other() -> None:
    async def unmap_both(t: UserContext, env: dict[str, int]) -> int:
        return await t.unmap(Fpage.mem(0x100000, 13), self_too=True)

    k, a, b, ta, _ = _two_tasks(_cycle_a(unmap_both), _cycle_b)
    res = k.run()
    assert res.died == []
    assert ta.result == 3  # a's two pages and b's
    assert _table(a) == _table(b) == []


def test_deleting_a_task_whose_pages_derive_from_each_other() -> None:
    async def done(t: UserContext, env: dict[str, int]) -> None:
        pass

    k, a, b, _, _ = _two_tasks(_cycle_a(done), _cycle_b)
    k.run()
    assert [m.base for m in a.space.mappings()] == [0x100000, 0x101000]
    k.delete(a)
    assert _table(b) == []


def test_map_item_whose_later_source_page_an_earlier_page_removes() -> None:
    async def body_a(t: UserContext, env: dict[str, int]) -> IpcError:
        await _from_sigma0(t, env["s0"], 0x200000, 0x100000)
        await t.send(env["b"], items=[MapItem(Fpage.mem(0x100000, 12))])  # to b's 0x301000
        r = await t.receive(env["b"], window=Fpage.mem(0x100000, 13))
        return r.error

    async def body_b(t: UserContext, env: dict[str, int]) -> IpcError:
        await _from_sigma0(t, env["s0"], 0x210000, 0x300000)
        await t.receive(env["a"], window=Fpage.mem(0x301000, 12))
        # Page 0x300000 lands on a's 0x100000 and replaces it (with b's 0x301000, derived
        # from it); page 0x301000 is then unmapped and maps nothing.
        r = await t.send(env["a"], items=[MapItem(Fpage.mem(0x300000, 13))])
        return r.error

    k, a, b, ta, tb = _two_tasks(body_a, body_b)
    k.run()
    assert (ta.result, tb.result) == (IpcError.OK, IpcError.OK)
    assert _table(a) == [(0x100000, 12, 0x210000)]
    assert _table(b) == [(0x300000, 12, 0x210000)]


def test_fpage_address_bits_below_the_order_are_ignored() -> None:
    async def body_a(t: UserContext, env: dict[str, int]) -> tuple[IpcError, int]:
        await _from_sigma0(t, env["s0"], 0x200000, 0x100000, order=13)
        r = await t.send(env["b"], items=[MapItem(Fpage.mem(0x101000, 13))])  # = 0x100000/13
        return r.error, await t.unmap(Fpage.mem(0x101000, 13))

    async def body_b(t: UserContext, env: dict[str, int]) -> IpcError:
        return (await t.receive(env["a"], window=Fpage.mem(0x300000, 13))).error

    k, _, b, ta, tb = _two_tasks(body_a, body_b)
    k.run()
    assert (ta.result, tb.result) == ((IpcError.OK, 2), IpcError.OK)
    assert _table(b) == []  # both pages mapped, then unmapped
