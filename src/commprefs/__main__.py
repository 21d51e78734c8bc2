"""`python -m commprefs` runs the CLI."""

from commprefs.cli import main

main()
