"""Judged evaluation of two prompt versions on held-out feedback (`judge`).
"""

__all__: list[str] = []
