"""The demonstrations a candidate prompt carries, read back for the job page.

Both optimizers (`kaizen_server.optimize.fewshot` and the DSPy one) write the demonstrations
they chose into the candidate's text as a few-shot section (`fewshot.build_prompt`): a heading,
then ``Example N:`` with one ``Input:`` and one ``Output:`` line of quoted JSON each. This
module reads that section back, bounded, so the page can show which examples were used.
"""

from __future__ import annotations

import dataclasses
import json

from kaizen_server.optimize.fewshot import EXAMPLES_HEADER

__all__ = ["MAX_SHOWN", "MAX_TEXT", "Demonstration", "demonstrations"]

MAX_SHOWN = 10
"""At most this many demonstrations are shown (the rest are counted)."""
MAX_TEXT = 400
"""Each input or output is cut to this many characters (with an ellipsis)."""


@dataclasses.dataclass(frozen=True)
class Demonstration:
    """One demonstration: its number in the prompt, its input and output as text."""

    number: int
    inputs: str
    output: str


def _text(line: str, prefix: str) -> str:
    raw = line[len(prefix):].strip() if line.startswith(prefix) else line.strip()
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           sort_keys=True)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def demonstrations(prompt_text: str, *, limit: int = MAX_SHOWN) -> tuple[list[Demonstration],
                                                                          int]:
    """The first *limit* demonstrations in *prompt_text*'s few-shot section, and how many
    there are in all (``([], 0)`` without a section)."""
    parts = prompt_text.split(f"\n\n{EXAMPLES_HEADER}\n", 1)
    if len(parts) < 2:
        return [], 0
    shown: list[Demonstration] = []
    total = 0
    lines = parts[1].split("\n")
    for index, line in enumerate(lines):
        if not (line.startswith("Example ") and line.endswith(":")):
            continue
        total += 1
        if len(shown) >= limit:
            continue
        following = lines[index + 1:index + 3]
        inputs = next((x for x in following if x.startswith("Input: ")), "")
        output = next((x for x in following if x.startswith("Output: ")), "")
        shown.append(Demonstration(total, _text(inputs, "Input: "), _text(output, "Output: ")))
    return shown, total
