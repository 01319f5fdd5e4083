"""Bundled resources (installed as the package ``salm_desktop.resources``): see README.md."""
