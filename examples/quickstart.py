"""Quickstart: decorate an LLM function once; every call is traced, scored and tuned.

Run it with nothing else installed::

    python examples/quickstart.py

It starts a local CT server in-process (temporary database). To use your own CT server
instead, set ``KAIZEN_BASE_URL`` and ``KAIZEN_API_KEY`` before running it.
"""

from __future__ import annotations

import os

import kaizen_sdk as ct

TICKETS = [
    ("My invoice shows the wrong VAT number", "billing"),
    ("The app crashes when I upload a photo", "bug"),
    ("I forgot my password and the reset mail never came", "account"),
    ("Why was I charged twice in March?", "billing"),
    ("Export to CSV fails with error 500", "bug"),
    ("Please add my colleague to our team account", "account"),
]


def call_your_llm(prompt_text: str) -> str:
    """Stand-in for a real model call (openai, litellm, ...): a keyword classifier."""
    ticket = prompt_text.rsplit("Ticket:", 1)[-1].lower()
    for label, words in {
        "billing": ("invoice", "charged", "vat"),
        "bug": ("crash", "error", "fails"),
    }.items():
        if any(word in ticket for word in words):
            return label
    return "account"


# 1. Decorate the function. It receives the task's active prompt as `prompt`; until the CT
#    server has one, it gets `default_prompt` (and the first trace makes it version 1).
@ct.task("route_ticket", default_prompt="Route this ticket to billing, bug or account.\n"
                                        "Ticket: {{ ticket }}")
def route(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
    return call_your_llm(prompt.render(ticket=ticket))


def main() -> None:
    server = None
    if not os.environ.get("KAIZEN_BASE_URL"):
        from kaizen_server import LocalServer

        server = LocalServer().start()
        ct.configure(base_url=server.base_url, api_key=server.api_key)
    client = ct.get_client()  # the client @ct.task uses (built from KAIZEN_* when unset)
    try:
        # 2. Call it as usual; `.call()` also returns the run, to score the call later.
        for ticket, expected in TICKETS:
            label, run = route.call(ticket)
            run.score(1.0 if label == expected else 0.0)  # your judge, or a user's thumbs up
            print(f"{label:<8} <- {ticket}  (prompt v{run.prompt.version_number})")

        # 3. Let the CT server tune the prompt from the scored calls.
        job = client.trigger_optimization("route_ticket").job
        job = client.wait_for_job(str(job.id), timeout=120, poll_interval=0.2)
        print(f"optimization job: {job.status}")
        newest = max(client.list_prompt_versions("route_ticket"), key=lambda p: p.version_number)
        client.activate_prompt("route_ticket", str(newest.id))

        # 4. The next call runs on the new version, with no code change.
        label, run = route.call(TICKETS[0][0])
        print(f"now on prompt v{run.prompt.version_number}: {label}")
        client.flush()
        print(f"delivery: {client.stats()}")
    finally:
        client.close()  # delivers whatever is still queued
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
