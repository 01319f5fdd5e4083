"""Frozen entry point for salm-desktop (PyInstaller needs a script, not a console_scripts entry)."""

from salm_desktop.gui.app import main

raise SystemExit(main())
