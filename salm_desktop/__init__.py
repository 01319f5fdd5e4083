"""SALM Desktop: protect medical imaging datasets before they are shared."""

__version__ = "0.1.0"
