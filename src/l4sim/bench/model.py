"""The cost model against the lecture: simulated pingpong round trips.

Every figure here is what the emulator does, not a formula: each configuration runs a
ping-pong kernel (`pingpong.add_pair`: a client calling an echo server in
`reply_and_wait`) for `n` round trips with the profile of its kernel-entry method and
reads the simulated clock. A round trip is the client's call plus the server's
reply_and_wait: two IPCs and two thread switches.

The lecture's six configurations (FIASCO_FACTS.md, "Lecture figures") come first, each
beside the lecture's figure; then the model's predictions for what the lecture does not
list: UTCB messages of 4 to 63 words in one and in two address spaces, with both entry
methods, and string IPC (a call carrying one string of 4 KiB to 1 MiB between two
address spaces) by both copy strategies. The lecture's UTCB rows were measured with
int30 (1938 cycles for 4 words is more than four times the 448 of a whole sysenter
round trip, and 497 above int30's register-only 1441), so they run with the int30
profile here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..kernel import Kernel
from ..kernel.costs import PROFILES, CostProfile
from .pingpong import add_pair, add_string_pair, check_pair

ENTRIES = ("int30", "sysenter")
WORDS = (2, 4, 8, 16, 32, 63)      # 2: register-only; more than 3 travel in the UTCB
LECTURE_MHZ = 2663                 # the lecture's Core 2


@dataclass(frozen=True)
class Config:
    entry: str          # "int30" or "sysenter"
    same_space: bool    # client and server in one task
    words: int          # untyped words each way
    cross_cpu: bool = False  # client and server on two CPUs (each handshake a DRQ by IPI)

    @property
    def name(self) -> str:
        kind = "register" if self.words <= 3 else f"utcb-{self.words}"
        space = ("cross-cpu" if self.cross_cpu else
                 "same-space" if self.same_space else "cross-space")
        return f"{kind}-{space}-{self.entry}"


# The lecture's table: configuration -> (cycles, ns) per round trip.
LECTURE: dict[Config, tuple[int, int]] = {
    Config("int30", True, 2): (1441, 541),
    Config("sysenter", True, 2): (448, 168),
    Config("int30", False, 2): (1962, 736),
    Config("sysenter", False, 2): (895, 336),
    Config("int30", True, 4): (1938, 727),   # UTCB rows: int30 (see the module docstring)
    Config("int30", True, 8): (2030, 763),
}

# Every configuration the model runs: both entry methods, both spaces, every size.
GRID = tuple(Config(e, s, w) for e in ENTRIES for s in (True, False) for w in WORDS)
# Across CPUs: register IPC between two address spaces, the server on a second CPU.
CROSS_CPU = tuple(Config(e, False, 2, cross_cpu=True) for e in ENTRIES)
PREDICTIONS = tuple(c for c in GRID if c not in LECTURE) + CROSS_CPU


def default_profiles() -> dict[str, CostProfile]:
    return {"int30": PROFILES["core2-int30"], "sysenter": PROFILES["core2-sysenter"]}


def simulate(config: Config, prof: CostProfile, n: int = 10) -> float:
    """Simulated cycles per round trip of `config` under `prof`: run `n` round trips on
    a kernel with that profile and divide the simulated time they took."""
    k = Kernel(profile=prof, check=False, trace=False, frequency_mhz=LECTURE_MHZ,
               cpus=2 if config.cross_cpu else 1)
    client, log = add_pair(k, n, config.words, config.same_space, 1 if config.cross_cpu else 0)
    res = k.run()
    check_pair(config.name, client, log, res.died)
    return log[0][0] / n


def model_row(config: Config, prof: CostProfile, n: int = 10) -> dict[str, Any]:
    cycles = simulate(config, prof, n)
    r: dict[str, Any] = {
        "case": config.name,
        "section": "lecture" if config in LECTURE else "prediction",
        "entry": config.entry,
        "profile": prof.name,
        "same_space": config.same_space,
        "cross_cpu": config.cross_cpu,
        "words": config.words,
        "utcb": config.words > prof.register_words,
        "sim_cycles_per_rt": cycles,
        "sim_ns_per_rt": cycles * 1000 / LECTURE_MHZ,
    }
    if config in LECTURE:
        lec_cycles, lec_ns = LECTURE[config]
        r["lecture_cycles_per_rt"] = lec_cycles
        r["lecture_ns_per_rt"] = lec_ns
        r["rel_diff"] = (cycles - lec_cycles) / lec_cycles
    return r


# String IPC: a call carrying one string of these sizes, answered with one word,
# between two address spaces, by each copy strategy (sysenter).
STRING_SIZES = (4096, 16384, 65536, 262144, 1 << 20)
COPIES = ("window", "kernel-buffer")


def _size_text(n: int) -> str:
    return f"{n >> 20}m" if n >= 1 << 20 else f"{n >> 10}k"


def string_row(size: int, copy: str, prof: CostProfile, n: int = 3) -> dict[str, Any]:
    """Simulated cycles per round trip of a call with a `size`-byte string."""
    k = Kernel(profile=prof, check=False, trace=False, frequency_mhz=LECTURE_MHZ, copy=copy)
    client, log = add_string_pair(k, n, size)
    res = k.run()
    name = f"string-{_size_text(size)}-{copy}-cross-space-sysenter"
    check_pair(name, client, log, res.died)
    cycles = log[0][0] / n
    return {
        "case": name, "section": "prediction", "entry": "sysenter", "profile": prof.name,
        "same_space": False, "words": 0, "utcb": False, "string_bytes": size, "copy": copy,
        "sim_cycles_per_rt": cycles, "sim_ns_per_rt": cycles * 1000 / LECTURE_MHZ,
    }


def run_model(profiles: Mapping[str, CostProfile] | None = None,
              n: int = 10) -> list[dict[str, Any]]:
    """The lecture's six configurations, then the predictions, each simulated: UTCB
    sizes, then string IPC of 4 KiB to 1 MiB by both copy strategies.

    `profiles` maps each entry method ("int30", "sysenter") to the profile it runs with
    (default: the built-in core2-int30 and core2-sysenter)."""
    profs = dict(default_profiles())
    profs.update(profiles or {})
    rows = [model_row(c, profs[c.entry], n) for c in (*LECTURE, *PREDICTIONS)]
    rows += [string_row(size, copy, profs["sysenter"]) for copy in COPIES for size in STRING_SIZES]
    return rows


MATPLOTLIB_MISSING = ("--plot needs matplotlib, which is not installed; "
                      "install the optional extra: pip install 'l4sim[plot]'")


def plot(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Cycles per round trip against message size, one line per configuration (entry
    method and spaces); the lecture's figures as separate markers. Raises RuntimeError
    with MATPLOTLIB_MISSING when matplotlib is not installed."""
    try:  # an optional extra: imported by name, so type checking does not need it
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise RuntimeError(MATPLOTLIB_MISSING) from None
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")

    fig, (ax, sax) = plt.subplots(1, 2, figsize=(13, 5))
    strings = [r for r in rows if "string_bytes" in r]
    rows = [r for r in rows if "string_bytes" not in r]
    for copy in COPIES:
        pts = sorted((r["string_bytes"], r["sim_cycles_per_rt"]) for r in strings if r["copy"] == copy)
        sax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{copy}, sysenter")
    sax.set_xscale("log", base=2)
    sax.set_yscale("log")
    sax.set_xlabel("string bytes per call (user-memory IPC)")
    sax.set_ylabel("simulated cycles per round trip")
    sax.set_title("string IPC between two address spaces")
    sax.grid(True, alpha=0.3)
    sax.legend()
    for entry in ENTRIES:
        for same in (True, False):
            pts = sorted((r["words"], r["sim_cycles_per_rt"]) for r in rows
                         if r["entry"] == entry and r["same_space"] == same)
            label = f"{entry}, {'same space' if same else 'different spaces'}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    lec = [r for r in rows if "lecture_cycles_per_rt" in r]
    ax.scatter([r["words"] for r in lec], [r["lecture_cycles_per_rt"] for r in lec],
               marker="x", s=80, color="black", zorder=3, label="lecture (Core 2)")
    ax.set_xlabel("untyped words per message (≤ 3: registers, else UTCB)")
    ax.set_ylabel("simulated cycles per round trip")
    ax.set_title("l4sim pingpong: call + reply_and_wait")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
