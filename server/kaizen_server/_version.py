"""The package version, read by the build: always the version of the kaizen-sdk it pins."""

__all__ = ["__version__"]

__version__ = "0.1.0"
