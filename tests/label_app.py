"""A running application for the label tests: serves one task's prompt until stdin closes.

Run as ``python label_app.py TASK`` with ``KAIZEN_BASE_URL``/``KAIZEN_API_KEY`` (and
``KAIZEN_PROMPT_LABEL``, ``KAIZEN_PROMPT_REFRESH``) set. Each line read on stdin is one call:
it answers one JSON line with what the decorated function rendered, what ``ct.prompt`` (the
instrument-only path) serves, the process id and the prompt fetcher's counts.
"""

from __future__ import annotations

import json
import os
import sys

import kaizen_sdk as ct
from kaizen_sdk._prompts import prompt_fetcher


def main(task: str) -> None:
    """Answer one JSON line per line of stdin; flush and exit when stdin closes."""

    @ct.task(task)
    def decorated(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
        return prompt.render(x=x)

    for _line in sys.stdin:
        stats = prompt_fetcher(ct.get_client()).stats
        reply = {
            "decorated": decorated("a"),
            "served": ct.prompt(task).render(x="a"),
            "pid": os.getpid(),
            "requests": stats.requests,
            "changed": stats.changed,
        }
        print(json.dumps(reply), flush=True)
    ct.flush()


if __name__ == "__main__":
    main(sys.argv[1])
