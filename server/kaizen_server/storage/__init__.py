"""Where the server keeps its data: the SQLite `Store` and its schema steps (`sqlite`).
"""

__all__: list[str] = []
