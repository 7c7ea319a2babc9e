"""reid-search: person re-identification search (models, training, footage ingestion, service)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("reid-search")  # the one place the version is read: the package metadata
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
