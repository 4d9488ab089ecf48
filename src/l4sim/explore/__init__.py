"""Exploring l4sim systems beyond single runs.

`fuzz` is the seeded generative fuzzer behind `l4sim fuzz`: random systems whose threads
issue random system calls, valid and malformed, checked against the kernel's invariants
and the fuzzer's own oracles (`fuzz_gen` makes and renders the programs, `fuzz` runs and
judges them, `fuzz_cli` is the command).
"""
