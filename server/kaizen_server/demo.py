"""``kaizen demo``: the whole continuous-tuning loop on this machine, offline, in seconds.

It starts an embedded local CT server with a temporary database (unless ``KAIZEN_BASE_URL``
is set, then it uses that server and ``KAIZEN_API_KEY``), creates a task, runs a
``@task``-decorated function over a small built-in dataset with a deterministic stand-in
model, scores every answer, triggers an optimization and shows its progress, activates the
new prompt version, runs the function again on it, and ends with a summary table.

The stand-in model is a keyword classifier that, like a real model, does better with worked
examples in its prompt: without them it only reads the first few words of a ticket.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from kaizen_sdk.errors import CTError
from kaizen_sdk.models import Job, Prompt
from kaizen_server.settings import KAIZEN_API_KEY, KAIZEN_BASE_URL

__all__ = ["DATASET", "main", "stand_in_model"]

TASK = "classify_ticket"

DEFAULT_PROMPT = (
    "Classify the support ticket as billing, bug or account. Answer with the label only.\n"
    "Ticket: {{ ticket }}"
)

DATASET: list[tuple[str, str]] = [
    ("Refund please, I was charged twice this month", "billing"),
    ("Charged for a plan I cancelled in May", "billing"),
    ("Hello team, quick question about last month: why was I charged extra?", "billing"),
    ("I moved offices recently and my card got charged the old VAT rate", "billing"),
    ("Crash on startup since the last update", "bug"),
    ("Error 500 when I export a report", "bug"),
    ("Every time I open the dashboard on my phone it shows an error", "bug"),
    ("After the new release our whole team sees the editor crash", "bug"),
    ("Password reset link never arrives", "account"),
    ("Cannot log in after changing my email address", "account"),
    ("My colleague left the company, please remove her login", "account"),
    ("The invoice page shows an error whenever I open it", "bug"),
]
"""Tickets and their true labels."""

_KEYWORDS = {
    "billing": ("refund", "charged", "invoice", "vat"),
    "bug": ("crash", "error", "500", "broken"),
    "account": ("password", "log in", "login", "email"),
}
_FIRST_WORDS = 6


def stand_in_model(prompt: str) -> str:
    """A deterministic stand-in for an LLM: classify the ticket in *prompt* by keywords.

    Without worked examples in the prompt it reads only the first few words of the ticket;
    with an ``Examples`` section (what the optimizer adds) it reads the whole ticket.
    """
    ticket = prompt.rsplit("Ticket:", 1)[-1].split("\n\n", 1)[0].strip().lower()
    if "### Examples" not in prompt:
        ticket = " ".join(ticket.split()[:_FIRST_WORDS])
    best, best_at = "account", len(ticket) + 1
    for label, words in _KEYWORDS.items():
        for word in words:
            at = ticket.find(word)
            if 0 <= at < best_at:
                best, best_at = label, at
    return best


def _judge(answer: str, truth: str) -> float:
    """A deterministic judge: full marks for the right label, a little for a wrong one."""
    return 1.0 if answer == truth else 0.1


class _Out:
    """Plain, readable output; symbols only when the terminal can show them."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        encoding = (getattr(stream, "encoding", None) or "").lower()
        fancy = encoding.replace("-", "") in ("utf8", "utf8sig")
        self.ok, self.bad, self.arrow = ("✓", "✗", "→") if fancy else ("+", "x", "->")

    def __call__(self, text: str = "") -> None:
        print(text, file=self.stream, flush=True)

    def step(self, number: int, text: str) -> None:
        self()
        self(f"[{number}/6] {text}")


@contextmanager
def _server(out: _Out) -> Iterator[tuple[str, str, bool]]:
    base_url = os.environ.get(KAIZEN_BASE_URL)
    if base_url:
        api_key = os.environ.get(KAIZEN_API_KEY)
        if not api_key:
            raise CTError(f"{KAIZEN_BASE_URL} is set, so the demo needs {KAIZEN_API_KEY} too.")
        out(f"Using the CT server at {base_url} ({KAIZEN_BASE_URL} is set).")
        yield base_url, api_key, False
        return
    from kaizen_server.http.server import LocalServer

    with LocalServer(api_key="kaizen-demo-key", job_step_delay=0.15) as server:
        out(f"Started an embedded local CT server at {server.base_url} (temporary database).")
        yield server.base_url, server.api_key, True


def main(stream: TextIO | None = None, *, serve: bool = False,
         until: Callable[[], bool] | None = None) -> int:
    """Run the demo; return the exit code (0 when the loop completed).

    With *serve*, the embedded server stays up after the demo (its web UI's address and key
    are printed) until Ctrl-C, or until *until* returns true (checked twice a second).
    """
    out = _Out(stream or sys.stdout)
    started = time.monotonic()
    out("Kaizen demo: decorate a function once, and the loop tunes its prompt.")
    try:
        with _server(out) as (base_url, api_key, embedded):
            code = _run(out, base_url, api_key, embedded, started)
            if code == 0:
                _look(out, base_url, api_key, embedded, serve, until)
            return code
    except CTError as exc:
        out(f"The demo stopped: {exc}")
        return 1


def _look(out: _Out, base_url: str, api_key: str, embedded: bool, serve: bool,
          until: Callable[[], bool] | None) -> None:
    """Say how to look at what the demo did in a browser; with *serve*, keep serving."""
    if not embedded:
        out(f"See it in a browser: {base_url}/ui/ (docs/ui.md).")
        return
    if not serve:
        out("See it in a browser: `kaizen demo --serve` keeps the server up and prints the "
            "address of its web UI (docs/ui.md).")
        return
    out(f"Web UI: {base_url}/ui/ (sign in with the key {api_key}). Press Ctrl-C to stop.")
    try:
        while not (until is not None and until()):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    out("Stopped.")


def _run(out: _Out, base_url: str, api_key: str, embedded: bool, started: float) -> int:
    from kaizen_sdk.client import CTClient
    from kaizen_sdk.decorators import task as task_decorator

    task = TASK if embedded else f"{TASK}_{uuid.uuid4().hex[:6]}"
    with CTClient(base_url=base_url, api_key=api_key) as client:
        out.step(1, f"Create the task {task!r}")
        client.create_task(
            task, description="Route support tickets to the right team.", feedback_threshold=100
        )
        out(f"  default prompt: {DEFAULT_PROMPT.splitlines()[0]}")

        @task_decorator(task, client=client, default_prompt=DEFAULT_PROMPT)
        def classify(ticket: str, prompt: Prompt) -> str:
            return stand_in_model(prompt.render(ticket=ticket))

        out.step(2, f"Run the decorated function over {len(DATASET)} tickets and score them")
        first = _run_dataset(out, client, classify, task)

        out.step(3, "Trigger an optimization from the scored feedback")
        result = client.trigger_optimization(task)
        cost = result.cost_estimate
        spend = (
            f"estimated ${cost.estimated_cost_usd:.2f} for {cost.estimated_llm_calls} LLM calls"
            if cost.estimated_llm_calls
            else "no LLM calls: the local optimizer builds a few-shot prompt"
        )
        out(f"  job {str(result.job.id)[:8]} queued: {cost.train_size} training and "
            f"{cost.val_size} validation examples; {spend}")
        job = client.wait_for_job(
            str(result.job.id), timeout=60, poll_interval=0.05, on_progress=_progress(out)
        )
        if not job.is_success:
            out(f"  the job ended with {job.status}: {job.error_message}")
            return 1
        out(f"  job finished: {job.status}")

        out.step(4, "Activate the new prompt version")
        versions = client.list_prompt_versions(task)
        candidate = max(versions, key=lambda p: p.version_number)
        active = client.activate_prompt(task, str(candidate.id))
        examples = [
            line for line in active.prompt_text.splitlines() if line.startswith("Input: ")
        ]
        out(f"  version {active.version_number} by {active.optimizer} is now active; it adds "
            f"{len(examples)} worked examples to the prompt:")
        for line in examples:
            out(f"    {line if len(line) <= 76 else line[:73] + '...'}")

        out.step(5, "Run the same tickets again: the function now runs on the new version")
        second = _run_dataset(out, client, classify, task)

        out.step(6, "Summary")
        client.flush()
        stats = client.stats()
        stored = len(client.list_traces(task, limit=1000))
        rows = [
            ("calls", f"{len(first) + len(second)}",
             f"{len(first)} on v{first[-1][1]}, {len(second)} on v{second[-1][1]}"),
            ("traces delivered", f"{stored}",  # stats.sent also counts the scores
             f"{stored} stored, {stats.dropped} dropped, {stats.retried} retried"),
            ("prompt versions", f"{len(client.list_prompt_versions(task))}",
             f"v{active.version_number} active"),
            ("mean score", f"{_mean(first):.2f} {out.arrow} {_mean(second):.2f}",
             f"v{first[-1][1]} {out.arrow} v{second[-1][1]}"),
        ]
        for name, value, note in rows:
            out(f"  {name:<18} {value:<14} {note}")
        out()
        out(f"Done in {time.monotonic() - started:.1f} s. Next: docs/tasks.md shows the same "
            "loop in your own code (examples/quickstart.py).")
    return 0


def _run_dataset(
    out: _Out, client: Any, classify: Any, task: str
) -> list[tuple[float, int]]:
    """Classify every ticket, score each call, and return ``(score, prompt version)`` pairs."""
    results: list[tuple[float, int]] = []
    for ticket, truth in DATASET:
        answer, run = classify.call(ticket)
        score = _judge(answer, truth)
        run.score(score, scored_by="demo-judge")
        version = run.prompt.version_number if run.prompt is not None else 0
        mark = out.ok if score == 1.0 else out.bad
        shown = ticket if len(ticket) <= 52 else ticket[:49] + "..."
        out(f"  {mark} {shown:<52} {out.arrow} {answer:<8} score {score:.1f}  (v{version})")
        results.append((score, version))
        if version == 0:
            # The first call ran on the default prompt; its trace makes it version 1 on the
            # server. Deliver it and load it now, as a background refresh would a moment later.
            client.flush()
            client.get_prompt(task)
            out("    (v0 is the default prompt: this first trace made it version 1 on the "
                "server)")
    client.flush()  # scores travel in the background: the optimizer needs them stored
    mean = _mean(results)
    out(f"  mean score {mean:.2f} over {len(results)} calls")
    return results


def _mean(results: list[tuple[float, int]]) -> float:
    return sum(score for score, _ in results) / len(results) if results else 0.0


def _progress(out: _Out) -> Callable[[Job], None]:
    seen: list[str] = []

    def show(job: Job) -> None:
        step = job.progress_step or job.status.lower()
        if not seen or seen[-1] != step:
            seen.append(step)
            out(f"  ... {step}")

    return show
