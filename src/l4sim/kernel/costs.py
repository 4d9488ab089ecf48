"""The cycle cost model (S17): named parameters charged on the simulated clock.

A profile says what each piece of kernel work costs in cycles of the emulated CPU. The
two built-in profiles follow the lecture's Core 2 figures (FIASCO_FACTS.md); the full
calibration and its test come with the cost-model issue.
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

    def ipc_cost(self, words: int) -> int:
        """Cycles of one IPC carrying `words` untyped words, without the switch."""
        cost = self.entry_exit + self.ipc_path
        if words > self.register_words:
            cost += self.utcb_base + words * self.mr_word
        return cost


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
