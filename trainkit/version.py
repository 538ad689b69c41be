"""trainkit's version, in one place (layer 0: the run directory records it)."""

__version__ = "0.1.0"
