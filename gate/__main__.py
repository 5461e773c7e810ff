"""`python -m gate`: the same command line as `provenance-gate`."""

from gate.cli import main

raise SystemExit(main())
