"""reid-search: person re-identification search service."""

__version__ = "0.1.0"
