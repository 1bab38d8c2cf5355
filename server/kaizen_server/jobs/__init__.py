"""Optimization jobs: the background `JobWorker` (`worker`) and the pull requests it opens
for prompts kept as code (`github`).
"""

__all__: list[str] = []
