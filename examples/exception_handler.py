"""Exception IPC: a handler that emulates an "instruction" for its client.

The client runs code that uses an instruction the (emulated) CPU does not have: it raises
trap 6 (invalid opcode) with the operand in the error code. The kernel turns that into a
call to the client's exception handler (tag label -5, MR0 = trap, MR1 = error code,
MR2 = code location); the handler computes what the instruction would have, and its
reply resumes the client with the result as if the instruction had run. Any other trap
the handler refuses to emulate: it does not reply but deletes the client.

    python examples/exception_handler.py     # or: l4sim run examples/exception_handler.py
"""

from __future__ import annotations

from typing import Any

from l4sim import Kernel, Label, RunResult

INVALID_OPCODE = 6
POPCOUNTS = [0, 1, 0xFF, 0xF0F0, (1 << 64) - 1]


def popcount(x: int) -> int:
    return bin(x).count("1")


async def handler(t: Any, client_sel: list[int], log: list[tuple[str, int, int]]) -> None:
    """Emulate POPCNT for trap 6; kill the client on anything else."""
    r = await t.wait()
    while True:
        if not r.ok or r.tag.label != Label.EXCEPTION:
            r = await t.wait()
            continue
        trap, operand = r.words[0], r.words[1]
        if trap == INVALID_OPCODE:
            log.append(("emulated", operand, popcount(operand)))
            r = await t.reply_and_wait(words=[popcount(operand)])
        else:
            log.append(("refused", trap, operand))
            await t.delete(client_sel[0])
            r = await t.wait()


async def client(t: Any, results: list[int]) -> None:
    for x in POPCOUNTS:
        r = await t.raise_exception(INVALID_OPCODE, x)   # "popcnt x": not on this CPU
        results.append(r.words[0])
    await t.raise_exception(0, 0)                      # divide by zero: not emulated
    results.append(-1)                                 # never reached


def build(k: Kernel) -> None:
    task = k.new_task("app")
    k.example = {"log": [], "results": [], "sel": []}   # type: ignore[attr-defined]
    h = task.new_thread(handler, k.example["sel"], k.example["log"], name="handler",  # type: ignore[attr-defined]
                        priority=150)
    c = task.new_thread(client, k.example["results"], name="client", exc_handler=h)  # type: ignore[attr-defined]
    k.example["sel"].append(task.add_cap(c))  # type: ignore[attr-defined]


def report(k: Kernel, result: RunResult) -> None:
    ex = k.example  # type: ignore[attr-defined]
    for entry in ex["log"]:
        print(*entry)
    expected = [popcount(x) for x in POPCOUNTS]
    print("client's results:", ex["results"], "expected:", expected)
    assert ex["results"] == expected, "the emulated instruction gave wrong results"
    assert [(th.name, why) for th, why in result.died] == [("client", "deleted")]


if __name__ == "__main__":
    kernel = Kernel()
    build(kernel)
    report(kernel, kernel.run())
