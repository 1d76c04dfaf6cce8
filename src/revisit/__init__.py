"""revisit: unique customer visit counting from periodic CCTV snapshots."""

__version__ = "0.1.0"
