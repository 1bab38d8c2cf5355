"""The package version, read by the build and by ``User-Agent``."""

__all__ = ["__version__"]

__version__ = "0.1.0"
