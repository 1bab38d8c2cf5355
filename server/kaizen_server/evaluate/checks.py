"""Online evaluation of one trace: code checks that need no LLM, and the LLM judge's prompt.

A code check returns an `Outcome`: a score in [0, 1] with a reason, or "unjudged" (``score``
``None``) with the reason (no correction to compare with, say). Checks: ``exact_match`` and
``normalized_match`` (case, surrounding and repeated whitespace and trailing punctuation
ignored) against the trace's correction, ``regex`` (``re.search`` on the output's first
`MAX_REGEX_CHARS`; `check_pattern` refuses nested repetition, which can backtrack for ever),
``json_schema`` (the output parses as JSON and the minimal validator `schema_errors` finds
nothing) and ``length`` (characters within the bounds).

`judge_messages` builds the judge's chat request for a trace and `parse_judgement` reads its
answer: the first number on its ``SCORE:`` line (else the first number at all), mapped from
the evaluator's ``[low, high]`` scale to [0, 1]; the rest of the answer is the reason. A
number outside the scale or no number is unjudged, never 0.

`schema_errors` implements the part of JSON Schema people write for LLM outputs: ``type``
(also a list), ``enum``, ``const``, ``properties``, ``required``, ``additionalProperties``
(boolean or schema), ``items``, ``minItems``/``maxItems``, ``minLength``/``maxLength``,
``pattern``, ``minimum``/``maximum``, ``anyOf``/``allOf``/``oneOf``. `check_schema` refuses a
schema using any other keyword, so a schema is never half-checked.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "MAX_CHECKED_CHARS",
    "MAX_REGEX_CHARS",
    "MAX_JUDGED_CHARS",
    "Outcome",
    "SCHEMA_KEYWORDS",
    "check_pattern",
    "check_schema",
    "judge_messages",
    "normalize",
    "parse_judgement",
    "run_check",
    "schema_errors",
]

MAX_CHECKED_CHARS = 100_000
"""A longer output is checked on its first this many characters (regex, lengths excepted)."""

MAX_REGEX_CHARS = 10_000
"""A regular expression is searched in the first this many characters of the output."""

MAX_JUDGED_CHARS = 20_000
"""Input, output and reference are each cut to this many characters in the judge's prompt."""

SCHEMA_KEYWORDS = frozenset({
    "$schema", "$id", "title", "description", "default", "examples", "type", "enum", "const",
    "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "minimum", "maximum", "anyOf", "allOf", "oneOf",
})
"""The JSON Schema keywords `schema_errors` checks (annotations included)."""

# a group holding a quantifier, itself quantified: (a+)+, (\w*x)*, (a{1,9})+ -- the shapes
# that backtrack exponentially on a crafted output (Python's re has no time limit)
_NESTED = re.compile(r"\((?:[^()\\]|\\.)*(?:[+*]|\{\d*,?\d*\})(?:[^()\\]|\\.)*\)"
                     r"\s*(?:[+*]|\{\d*,?\d*\})")
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
_SCORE_LINE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.I)
_NUMBER = re.compile(r"(?<![\w.])(-?\d+(?:\.\d+)?)")
_REASON_LINE = re.compile(r"^\s*reason\s*[:=]\s*", re.I | re.M)
_MAX_REASON = 2000


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The result of evaluating one trace: *score* in [0, 1], or ``None`` when unjudged."""

    score: float | None
    reason: str


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " …"


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def normalize(text: str) -> str:
    """*text* in NFKC case-folded form with whitespace collapsed and end punctuation dropped."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).strip(" .!?,;:")


def check_pattern(pattern: str, path: str = "pattern") -> None:
    """Raise `ValueError` naming *path* when *pattern* does not compile or nests quantifiers
    (a group with a quantifier, itself quantified: exponential backtracking on some inputs)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"`{path}` is not a valid regular expression: {exc}") from None
    nested = _NESTED.search(pattern)
    if nested is not None:
        raise ValueError(f"`{path}` repeats a group that repeats ({nested[0]!r}"
                         "): such patterns can take exponential time on a crafted output;"
                         " write it without the nested repetition")


# --- JSON schema ----------------------------------------------------------------------------

def check_schema(schema: Any, path: str = "json_schema") -> None:
    """Raise `ValueError` naming the place of the first thing `schema_errors` cannot check."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise ValueError(f"`{path}` must be a JSON object (a schema)")
    for key, value in schema.items():
        where = f"{path}.{key}"
        if key not in SCHEMA_KEYWORDS:
            raise ValueError(f"`{where}`: keyword not supported (supported:"
                             f" {', '.join(sorted(SCHEMA_KEYWORDS))})")
        if key == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(n not in _TYPES for n in names):
                raise ValueError(f"`{where}` must be one of {', '.join(_TYPES)} (or a list)")
        elif key == "properties":
            if not isinstance(value, Mapping):
                raise ValueError(f"`{where}` must be an object of schemas")
            for name, sub in value.items():
                check_schema(sub, f"{where}.{name}")
        elif key in ("items", "additionalProperties"):
            check_schema(value, where)
        elif key in ("anyOf", "allOf", "oneOf"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"`{where}` must be a non-empty list of schemas")
            for i, sub in enumerate(value):
                check_schema(sub, f"{where}[{i}]")
        elif key == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"`{where}` must be a list of property names")
        elif key == "enum":
            if not isinstance(value, list):
                raise ValueError(f"`{where}` must be a list")
        elif key in ("minItems", "maxItems", "minLength", "maxLength"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{where}` must be a whole number >= 0")
        elif key in ("minimum", "maximum"):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"`{where}` must be a number")
        elif key == "pattern":
            if not isinstance(value, str):
                raise ValueError(f"`{where}` must be a string")
            check_pattern(value, where)


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return name == "number" or float(value).is_integer()


def schema_errors(value: Any, schema: Any, path: str = "$") -> list[str]:
    """The places where *value* breaks *schema* (a schema `check_schema` accepts); ``[]``: valid."""
    if schema is True:
        return []
    if schema is False:
        return [f"{path}: no value is allowed here"]
    errors: list[str] = []
    kind = schema.get("type")
    if kind is not None:
        names = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, n) for n in names):
            return [f"{path}: expected {' or '.join(names)}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of the allowed values")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: not the required value")
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing property {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                errors += schema_errors(item, props[name], f"{path}.{name}")
            elif extra is False:
                errors.append(f"{path}: property {name!r} is not allowed")
            elif isinstance(extra, Mapping):
                errors += schema_errors(item, extra, f"{path}.{name}")
    if isinstance(value, list):
        if "items" in schema:
            for i, item in enumerate(value):
                errors += schema_errors(item, schema["items"], f"{path}[{i}]")
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"],
                                             value[:MAX_REGEX_CHARS]) is None:
            errors.append(f"{path}: does not match the pattern")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above {schema['maximum']}")
    for sub in schema.get("allOf", []):
        errors += schema_errors(value, sub, path)
    if "anyOf" in schema and all(schema_errors(value, s, path) for s in schema["anyOf"]):
        errors.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema and sum(not schema_errors(value, s, path)
                                 for s in schema["oneOf"]) != 1:
        errors.append(f"{path}: does not match exactly one of oneOf")
    return errors


# --- code checks ----------------------------------------------------------------------------

def run_check(config: Mapping[str, Any], output: str | None, correction: Any) -> Outcome:
    """Evaluate *output* with the code check *config* (an evaluator's settings)."""
    kind = config["kind"]
    if output is None:
        return Outcome(None, "the trace has no output to check")
    if kind in ("exact_match", "normalized_match"):
        if correction is None or correction == "":
            return Outcome(None, "the trace has no correction to compare with")
        want = _text(correction)
        same = output == want if kind == "exact_match" else normalize(output) == normalize(want)
        return Outcome(1.0 if same else 0.0,
                       "the output matches the correction" if same
                       else "the output differs from the correction")
    if kind == "regex":
        found = re.search(config["pattern"], output[:MAX_REGEX_CHARS]) is not None
        return Outcome(1.0 if found else 0.0,
                       "the pattern matches the output" if found
                       else "the pattern does not match the output")
    if kind == "length":
        low, high = config.get("min_length"), config.get("max_length")
        n = len(output)
        if low is not None and n < low:
            return Outcome(0.0, f"the output has {n} characters, fewer than {low}")
        if high is not None and n > high:
            return Outcome(0.0, f"the output has {n} characters, more than {high}")
        return Outcome(1.0, f"the output has {n} characters, within the bounds")
    if kind == "json_schema":
        if len(output) > MAX_CHECKED_CHARS:
            return Outcome(0.0, f"the output is longer than {MAX_CHECKED_CHARS} characters")
        try:
            value = json.loads(output)
        except ValueError as exc:
            return Outcome(0.0, f"the output is not JSON ({exc.__class__.__name__})")
        errors = schema_errors(value, config["json_schema"])
        if errors:
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            return Outcome(0.0, "; ".join(errors[:3]) + more)
        return Outcome(1.0, "the output is valid JSON for the schema")
    raise ValueError(f"not a code check: {kind!r}")


# --- the LLM judge --------------------------------------------------------------------------

def judge_messages(rubric: str, scale: Sequence[float], inputs: Any, output: str,
                   reference: Any = None) -> list[dict[str, str]]:
    """The judge's chat request for one trace: the rubric, the scale, input, output, reference."""
    low, high = scale[0], scale[1]
    parts = [
        f"Rubric: {rubric}",
        f"Task input:\n{_cut(_text(inputs if inputs is not None else {}), MAX_JUDGED_CHARS)}",
        ("Reference answer: none" if reference is None or reference == ""
         else f"Reference answer:\n{_cut(_text(reference), MAX_JUDGED_CHARS)}"),
        f"Answer to score:\n{_cut(output, MAX_JUDGED_CHARS)}",
        f"Reply with the score on the first line as `SCORE: n`, n a number from {low:g} to"
        f" {high:g}, then one line `REASON: ` with a short reason.",
    ]
    return [
        {"role": "system", "content": "You are a strict evaluator of answers."},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def parse_judgement(reply: str, scale: Sequence[float]) -> Outcome:
    """Read the judge's *reply*: its score mapped from *scale* to [0, 1] and its reason."""
    low, high = float(scale[0]), float(scale[1])
    match = _SCORE_LINE.search(reply) or _NUMBER.search(reply)
    reason = _REASON_LINE.split(reply, maxsplit=1)
    text = (reason[1] if len(reason) > 1 else reply).strip()
    if match is None:
        return Outcome(None, "the judge gave no score: " + _cut(text, 200))
    value = float(match.group(1))
    if not low <= value <= high:
        return Outcome(None, f"the judge's score {value:g} is outside the scale"
                             f" {low:g}..{high:g}: " + _cut(text, 200))
    return Outcome((value - low) / (high - low), _cut(text, _MAX_REASON))
