"""The user-level library (S20): servers built only on the user API, as L4 systems
build them: sigma0 (the root pager) and the anonymous-memory pager."""

from .anon_pager import anon_pager_body
from .sigma0 import SIGMA0_ANY, SIGMA0_FPAGE, sigma0_body

__all__ = ["SIGMA0_ANY", "SIGMA0_FPAGE", "anon_pager_body", "sigma0_body"]
