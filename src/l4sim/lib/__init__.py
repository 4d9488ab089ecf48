"""The user-level library: servers built only on the user API, as L4 systems build
them: sigma0 (the root pager) and the anonymous-memory pager; the server framework
(`framework`), the name server (`names`), and the POSIX servers with their client stubs
(`semaphore`, `sync`, `mqueue`, `pipe`, `shm`, `signals`), booted by `boot.System`.

sigma0 and the anonymous-memory pager stay outside the framework: they speak the
kernel's protocols (page-fault IPC, the sigma0 protocol) to any thread, which arrive
as direct IPC labelled with the faulting thread's id, not through connection gates; they
never defer a reply and hold no per-client resource. The framework's parts (OPEN with a
thread capability, gates from a pool, zero-timeout completions, liveness polls) are
nothing they need, and its receive loop would change their IPC (and so the simulated
times the tests fix)."""

from .anon_pager import anon_pager_body
from .sigma0 import SIGMA0_ANY, SIGMA0_FPAGE, sigma0_body

__all__ = ["SIGMA0_ANY", "SIGMA0_FPAGE", "anon_pager_body", "sigma0_body"]
