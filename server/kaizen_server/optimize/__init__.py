"""Prompt optimizers: the deterministic few-shot builder (`fewshot`, no LLM) and the
DSPy optimizer (`dspy_optimizer`, the ``optimize`` extra).
"""

__all__: list[str] = []
