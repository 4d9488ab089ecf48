"""The cycle cost model: named parameters charged on the simulated clock.

A profile says what each piece of kernel work costs, in cycles of the emulated CPU. The
kernel charges them where the work happens:

- `ipc_cost(words)` per IPC (kernel entry and exit, IPC path, UTCB words) — at the
  kernel entry of a send/receive/call/reply_and_wait and at the word transfer;
- `thread_switch` per thread switch, plus `space_switch` when the new thread runs in
  another task — in the CPU loop;
- `kernel_op` per non-IPC system call (ex_regs, delete, unmap, ...);
- `page_fault` per page fault (the exception entry before the page-fault IPC) — in
  `pagefault.page_fault` and, for faults during long IPC, `longipc._fault`;
- `timer_tick` per timer interrupt: once per batch of timeouts that fire
  (`Kernel._process_events`) and at the end of a timeslice (`Kernel.preemption_point`);
- per string byte, `string_byte_window` (one copy through the IPC window) or
  `string_byte_kernel_buffer` (two copies through a kernel buffer), plus
  `window_setup` whenever the window is established (at the start of a copy and after
  every switch or fault that flushed it) or, for the kernel buffer, one `space_switch`
  per transfer between two tasks — in `longipc.copy_strings`.

Calibration (FIASCO_FACTS.md, "Lecture figures"; Core 2 at 2663 MHz, pingpong round trip
= client call + server reply_and_wait = two IPCs and two thread switches):

    register-only, same space      2*(entry_exit + ipc_path) + 2*thread_switch
    register-only, other spaces    ... + 2*space_switch
    UTCB, same space, w words      ... + 2*(utcb_base + w*mr_word)

The two built-in profiles share every parameter except `entry_exit`, the only thing that
differs between int30 and sysenter; nothing is per lecture configuration. With them:

    case                              lecture   model   diff
    register, same space,  int30        1441     1442   +0.1%
    register, same space,  sysenter      448      448    0.0%
    register, other space, int30        1962     1890   -3.7%
    register, other space, sysenter      895      896   +0.1%
    UTCB 4 words, same space (int30)    1938     1938    0.0%
    UTCB 8 words, same space (int30)    2030     2034   +0.2%

The UTCB rows were measured with int30: 1938 - 1441 = 497 cycles for a 4-word UTCB
message on top of a register-only round trip, whereas with sysenter the whole register
round trip is only 448 — so the lecture's UTCB figures sit on the int30 baseline. The
cross-space int30 figure is the one the model cannot hit exactly: the lecture's
address-space switch costs 521 cycles more per round trip with int30 but 447 with sysenter;
one `space_switch` for both (224, fitted to the default, sysenter) leaves int30 3.7% low.

The parameters beyond the lecture's table are estimates, not calibrated: `page_fault`,
`timer_tick`, `string_byte_kernel_buffer`, `string_byte_window`, `window_setup`, and
`ipi`, which nothing charges while l4sim runs one CPU (an IPI needs a second one).

Your own profile: derive it from a built-in one and pass it to the kernel —

    from dataclasses import replace
    from l4sim.kernel.costs import PROFILES
    mine = replace(PROFILES["core2-sysenter"], name="mine", space_switch=0)  # tagged TLB
    k = Kernel(profile=mine)

(or register it, `PROFILES["mine"] = mine`, to choose it by name).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CostProfile:
    name: str
    entry_exit: int        # kernel entry and exit (int30 or sysenter)
    ipc_path: int          # handshake and finish of one IPC
    thread_switch: int     # switching the kernel stack / thread context
    space_switch: int      # address-space switch (TLB refill)
    register_words: int    # words that travel in registers for free
    utcb_base: int         # extra cost of a message that uses the UTCB
    mr_word: int           # per UTCB word copied
    kernel_op: int         # a non-IPC kernel operation (ex_regs, delete, ...)
    # Estimates, not calibrated to the lecture (see the module docstring):
    page_fault: int = 1_000                  # exception entry, fault decode, page-fault IPC setup
    ipi: int = 1_500                         # sending and taking an inter-processor interrupt
    timer_tick: int = 500                    # timer interrupt entry, tick accounting, exit
    string_byte_kernel_buffer: float = 1.0   # per string byte, copied in and out of a buffer
    string_byte_window: float = 0.5          # per string byte, copied once through the window
    window_setup: int = 300                  # mapping the receiver's buffer into the IPC window

    def ipc_cost(self, words: int) -> int:
        """Cycles of one IPC carrying `words` untyped words, without the switch."""
        cost = self.entry_exit + self.ipc_path
        if words > self.register_words:
            cost += self.utcb_base + words * self.mr_word
        return cost

    def round_trip(self, words: int, same_space: bool) -> int:
        """What the model says a pingpong round trip costs: two IPCs and two switches
        (the benchmark measures it by running the kernel; this is the cross-check)."""
        switch = self.thread_switch + (0 if same_space else self.space_switch)
        return 2 * (self.ipc_cost(words) + switch)


# The parameters the lecture's figures determine; a test checks that they, and nothing
# per configuration, give all six figures.
CALIBRATED = ("entry_exit", "ipc_path", "thread_switch", "space_switch", "register_words",
              "utcb_base", "mr_word")

PROFILES: dict[str, CostProfile] = {}

PROFILES["core2-sysenter"] = CostProfile(
    name="core2-sysenter", entry_exit=80, ipc_path=84, thread_switch=60, space_switch=224,
    register_words=3, utcb_base=200, mr_word=12, kernel_op=150)
PROFILES["core2-int30"] = replace(PROFILES["core2-sysenter"], name="core2-int30", entry_exit=577)


def profile(name_or_profile: str | CostProfile) -> CostProfile:
    if isinstance(name_or_profile, CostProfile):
        return name_or_profile
    try:
        return PROFILES[name_or_profile]
    except KeyError:
        raise ValueError(f"unknown cost profile {name_or_profile!r}; "
                         f"known: {', '.join(sorted(PROFILES))}") from None
