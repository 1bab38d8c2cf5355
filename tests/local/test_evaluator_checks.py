"""The code checks of online evaluators and the reading of a judge's answer (no server)."""

from __future__ import annotations

from typing import Any

import pytest

from kaizen_server.evaluate import checks

pytestmark = pytest.mark.unit

SCHEMA = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
          "properties": {"name": {"type": "string", "minLength": 1},
                         "age": {"type": "integer", "minimum": 0, "maximum": 150},
                         "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                  "maxItems": 2}}}


@pytest.mark.parametrize(("value", "errors"), [
    ({"name": "Ada", "age": 36}, []),
    ({"name": "Ada", "age": 36, "tags": ["a", "b"]}, []),
    ({"name": "Ada"}, ["$: missing property 'age'"]),
    ({"name": "", "age": 36.0}, ["$.name: shorter than 1 characters"]),
    ({"name": "Ada", "age": 36.5}, ["$.age: expected integer"]),
    ({"name": "Ada", "age": True}, ["$.age: expected integer"]),
    ({"name": "Ada", "age": 200}, ["$.age: above 150"]),
    ({"name": "Ada", "age": 1, "x": 1}, ["$: property 'x' is not allowed"]),
    ({"name": "Ada", "age": 1, "tags": ["c", "a", "b"]},
     ["$.tags[0]: not one of the allowed values", "$.tags: more than 2 items"]),
    ([], ["$: expected object"]),
])
def test_the_schema_validator(value: Any, errors: list[str]) -> None:
    checks.check_schema(SCHEMA)
    assert checks.schema_errors(value, SCHEMA) == errors


def test_any_one_all_of() -> None:
    schema = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert checks.schema_errors(None, schema) == []
    assert checks.schema_errors(3, schema) == ["$: matches none of anyOf"]
    one = {"oneOf": [{"type": "number"}, {"type": "integer"}]}
    assert checks.schema_errors(1.5, one) == []
    assert checks.schema_errors(2, one) == ["$: does not match exactly one of oneOf"]


@pytest.mark.parametrize(("schema", "named"), [
    ({"type": "objekt"}, "`json_schema.type`"),
    ({"properties": {"a": {"format": "email"}}}, "`json_schema.properties.a.format`"),
    ({"anyOf": []}, "`json_schema.anyOf`"),
    ({"items": {"minItems": -1}}, "`json_schema.items.minItems`"),
    ([1], "`json_schema` must be a JSON object"),
])
def test_a_schema_the_validator_cannot_check_is_refused(schema: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[")):
        checks.check_schema(schema)


@pytest.mark.parametrize(("kind", "output", "correction", "score"), [
    ("exact_match", "Paris", "Paris", 1.0),
    ("exact_match", "paris", "Paris", 0.0),
    ("normalized_match", "  paris. ", "Paris", 1.0),
    ("normalized_match", "PARIS\n  france!", "Paris France", 1.0),
    ("normalized_match", "Lyon", "Paris", 0.0),
    ("exact_match", "Paris", None, None),
    ("exact_match", None, "Paris", None),
])
def test_matches_against_the_correction(kind: str, output: str | None, correction: Any,
                                        score: float | None) -> None:
    assert checks.run_check({"kind": kind}, output, correction).score == score


def test_length_regex_and_json_checks() -> None:
    bounds = {"kind": "length", "min_length": 2, "max_length": 4}
    assert [checks.run_check(bounds, text, None).score for text in ("a", "ab", "abcd", "abcde")] \
        == [0.0, 1.0, 1.0, 0.0]
    assert checks.run_check({"kind": "regex", "pattern": r"\d{3}"}, "id 123", None).score == 1.0
    assert checks.run_check({"kind": "regex", "pattern": r"\d{3}"}, "id 12", None).score == 0.0
    json_check = {"kind": "json_schema", "json_schema": SCHEMA}
    assert checks.run_check(json_check, '{"name": "A", "age": 3}', None).score == 1.0
    broken = checks.run_check(json_check, '{"name": ', None)
    assert broken.score == 0.0 and "not JSON" in broken.reason


@pytest.mark.parametrize(("reply", "scale", "score", "reason"), [
    ("SCORE: 4\nREASON: mostly right", [1, 5], 0.75, "mostly right"),
    ("score=1", [0, 1], 1.0, "score=1"),
    ("7", [0, 10], 0.7, "7"),
    ("It deserves a 3 out of 5.", [1, 5], 0.5, "It deserves a 3 out of 5."),
])
def test_a_judges_answer_is_read_on_its_scale(reply: str, scale: list[float], score: float,
                                               reason: str) -> None:
    outcome = checks.parse_judgement(reply, scale)
    assert outcome.score == pytest.approx(score)
    assert outcome.reason == reason


@pytest.mark.parametrize(("reply", "why"), [
    ("Looks fine to me.", "the judge gave no score"),
    ("SCORE: 9\nREASON: great", "outside the scale 1..5"),
    ("SCORE: 0", "outside the scale 1..5"),
])
def test_an_answer_without_a_usable_score_is_unjudged_never_zero(reply: str, why: str) -> None:
    outcome = checks.parse_judgement(reply, [1, 5])
    assert outcome.score is None and why in outcome.reason


def test_the_judge_sees_the_rubric_scale_input_answer_and_reference() -> None:
    (system, user) = checks.judge_messages("Be right.", [1, 5], {"q": "2+2"}, "4", "4")
    assert system["role"] == "system"
    text = user["content"]
    assert "Rubric: Be right." in text and '"q": "2+2"' in text
    assert "Reference answer:\n4" in text and "Answer to score:\n4" in text
    assert "number from 1 to 5" in text
    long = checks.judge_messages("R", [0, 1], None, "x" * 50_000)[1]["content"]
    assert len(long) < checks.MAX_JUDGED_CHARS + 1000
