"""The local optimizer's pure functions: deterministic split, demos, prompt and score."""

from __future__ import annotations

import random

import pytest

from kaizen_server.optimize import fewshot as opt


def _examples(n: int) -> list[opt.Example]:
    return [
        opt.Example(id=f"id-{i:03d}", inputs={"q": f"question {i}"}, output=f"answer {i}",
                    score=round(i / max(1, n - 1), 4))
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("n", "sizes"), [(0, (0, 0)), (1, (1, 0)), (2, (1, 1)), (3, (2, 1)), (4, (3, 1)),
                     (5, (3, 2)), (8, (6, 2)), (10, (7, 3)), (100, (75, 25))],
)
def test_split_sizes(n: int, sizes: tuple[int, int]) -> None:
    assert opt.split_sizes(n) == sizes
    train, val = opt.split_train_val(_examples(n))
    assert (len(train), len(val)) == sizes
    assert {e.id for e in train} | {e.id for e in val} == {e.id for e in _examples(n)}
    assert not {e.id for e in train} & {e.id for e in val}


def test_split_does_not_depend_on_order() -> None:
    examples = _examples(20)
    shuffled = examples[:]
    random.Random(7).shuffle(shuffled)
    assert opt.split_train_val(examples) == opt.split_train_val(shuffled)
    assert opt.optimize("Base", examples) == opt.optimize("Base", shuffled)


def test_select_demos_best_first_ties_by_id() -> None:
    ex = [opt.Example(id=i, inputs=None, output=i, score=s)
          for i, s in [("b", 0.9), ("a", 0.9), ("c", 1.0), ("d", 0.1)]]
    assert [e.id for e in opt.select_demos(ex)] == ["c", "a", "b"]
    assert [e.id for e in opt.select_demos(ex, k=1)] == ["c"]
    assert opt.select_demos(ex, k=0) == []
    assert [e.id for e in opt.select_demos(ex, k=9)] == ["c", "a", "b"]  # d scores 0.1
    assert [e.id for e in opt.select_demos(ex, k=9, min_score=0.0)] == ["c", "a", "b", "d"]


def test_no_good_example_gives_the_base_prompt() -> None:
    bad = [opt.Example(id=str(i), inputs=None, output=i, score=0.2) for i in range(4)]
    result = opt.optimize("Base prompt.", bad)
    assert (result.prompt_text, result.demo_ids, result.eval_score) == ("Base prompt.", (), 0.2)


def test_build_prompt_exact_text_and_replaces_old_examples() -> None:
    demos = [opt.Example(id="x", inputs={"b": 2, "a": "é"}, output={"k": [1]}, score=1.0),
             opt.Example(id="y", inputs=None, output="plain", score=0.5)]
    text = opt.build_prompt("Summarize.", demos)
    note = "\n\n" + opt.EXAMPLES_NOTE
    assert text == (
        'Summarize.\n\n### Examples\n\nExample 1:\nInput: {"a": "é", "b": 2}\n'
        'Output: {"k": [1]}\n\nExample 2:\nInput: {}\nOutput: "plain"' + note
    )
    assert opt.build_prompt(text, demos[1:]) == (
        'Summarize.\n\n### Examples\n\nExample 1:\nInput: {}\nOutput: "plain"' + note
    )
    assert opt.build_prompt(text, []) == "Summarize."


def test_eval_score_is_mean_of_validation() -> None:
    val = [opt.Example(id=str(i), inputs=None, output=None, score=s)
           for i, s in enumerate([0.2, 0.4, 0.9])]
    assert opt.eval_score(val) == 0.5
    assert opt.eval_score([], val) == 0.5
    assert opt.eval_score([]) == 0.0


def test_optimize_result() -> None:
    examples = _examples(8)
    result = opt.optimize("Answer the question.", examples)
    train, val = opt.split_train_val(examples)
    assert (result.train_size, result.val_size) == (6, 2)
    assert result.eval_score == round(sum(e.score for e in val) / 2, 4)
    best = sorted((e for e in train if e.score >= 0.5), key=lambda e: -e.score)[:3]
    assert len(best) == 3
    assert result.demo_ids == tuple(e.id for e in best)
    assert result.prompt_text.startswith("Answer the question.\n\n### Examples\n\nExample 1:")
    for e in best:
        assert f"Output: {opt.quote_data(e.output)}" in result.prompt_text


def test_optimize_without_examples_raises() -> None:
    with pytest.raises(opt.NoScoredFeedbackError, match="no scored feedback"):
        opt.optimize("Base", [])


def test_default_base_prompt_names_task() -> None:
    assert opt.default_base_prompt("summarize") == "Perform the task 'summarize'."
