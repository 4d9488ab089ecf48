"""`python -m l4sim`: the command line."""

from .cli import main

main()
