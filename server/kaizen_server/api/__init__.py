"""What each route of the CT API means: operations, the route table, wire helpers and the
OpenAPI document (`routes`).
"""

__all__: list[str] = []
