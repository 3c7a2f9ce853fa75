"""The medsr version, in a leaf module so that lower layers (``medsr.io``) need not import the
top-level package (whose ``__init__`` imports the whole public API)."""

__version__ = "0.1.0"
