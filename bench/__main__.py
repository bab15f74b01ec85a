"""Entry point: ``python -m bench [--db sqlite|postgres] [--redis] [--workers N] [--quick]``."""

from bench.cli import main

raise SystemExit(main())
