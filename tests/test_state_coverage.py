"""S15: the test suite reports which declared transitions it exercised; every one must be.

`conftest.py` installs a recorder as `l4sim.kernel.states.coverage` for the whole session
and makes the test below the last item. The recorder accepts only additions made by
`Kernel.set_state` of a kernel with `check=True` while some other test runs, so the
verdict rests on transitions that real kernels took in real tests.

The verdict needs the whole suite: run on a subset (`-k`, `-m`, some files, one node id,
`--lf`, `--deselect`), the test skips and says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from l4sim.kernel import states

# Declared transitions that the kernel as it stands can never take. Each entry is a kernel
# bug (the kernel or the declared machine is wrong, S15), reported with a reproducer; the
# test xfails while exactly these are missing and fails as soon as one is reached (the
# entry must then go) or anything else is missing.
KNOWN_UNREACHABLE: dict[tuple[int, int], str] = {}


def _describe(old: int, new: int) -> str:
    return f"{states.state_name(old)} -> {states.state_name(new)}  ({states.WHY[(old, new)]})"


def _partial_run_reason(request: pytest.FixtureRequest, collection_info, all_test_files) -> str | None:  # type: ignore[no-untyped-def]
    if collection_info.node_args:
        return f"single tests were selected on the command line: {collection_info.node_args}"
    if collection_info.deselected:
        return f"{collection_info.deselected} tests were deselected (-k, -m, --deselect, --lf, ...)"
    run_files = {Path(item.path).resolve() for item in request.session.items}
    seen = run_files | collection_info.modules
    missing = sorted(p.name for p in all_test_files - seen)
    if missing:
        return "not every test file was collected; missing: " + ", ".join(missing)
    if hasattr(request.config, "workerinput"):
        return "running on a pytest-xdist worker, which sees only part of the suite"
    return None


def test_every_declared_transition_is_exercised(request, transition_coverage,  # type: ignore[no-untyped-def]
                                                 collection_info, all_test_files) -> None:
    assert states.coverage is transition_coverage, (
        "states.coverage was replaced during the session; conftest.py installs the recorder")
    why_partial = _partial_run_reason(request, collection_info, all_test_files)
    if why_partial is not None:
        pytest.skip("transition coverage is judged only on a run of the whole suite: " + why_partial)

    declared = [(t.old, t.new) for t in states.TRANSITIONS]
    missing = [tr for tr in declared if tr not in transition_coverage]
    undeclared = sorted(tr for tr in transition_coverage if tr not in states.ALLOWED)
    assert not undeclared, (
        "the recorder holds transitions that are not declared (set_state must refuse them): "
        + ", ".join(f"{states.state_name(o)} -> {states.state_name(n)}" for o, n in undeclared))

    unexpected = [tr for tr in missing if tr not in KNOWN_UNREACHABLE]
    fixed = [tr for tr in KNOWN_UNREACHABLE if tr in transition_coverage]
    lines = []
    if unexpected:
        lines.append(f"{len(unexpected)} of {len(declared)} declared transitions were never "
                     "taken by a kernel in any test:")
        lines += [f"  {_describe(*tr)}" for tr in unexpected]
    if fixed:
        lines.append("transitions listed in KNOWN_UNREACHABLE are now reached (the kernel was "
                     "fixed: remove them from the list):")
        lines += [f"  {_describe(*tr)}  first reached by {transition_coverage.first_test[tr]}"
                  for tr in fixed]
    known_missing = [tr for tr in missing if tr in KNOWN_UNREACHABLE]
    if lines:
        if transition_coverage.rejected:
            lines.append(f"({transition_coverage.rejected} additions to the recorder were refused: "
                         "made outside a test or not by kernel code in l4sim.kernel)")
        if known_missing:
            lines.append("also missing, known kernel bugs:")
            lines += [f"  {_describe(*tr)}: {KNOWN_UNREACHABLE[tr]}" for tr in known_missing]
        pytest.fail("\n".join(lines), pytrace=False)
    if known_missing:
        pytest.xfail("; ".join(f"{_describe(*tr)}: {KNOWN_UNREACHABLE[tr]}" for tr in known_missing))
