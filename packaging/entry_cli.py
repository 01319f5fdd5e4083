"""Frozen entry point for salm-protect."""

from salm_desktop.cli import main

raise SystemExit(main())
