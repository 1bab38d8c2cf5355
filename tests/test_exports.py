"""The public surface: ``__all__`` is sorted, complete, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import kaizen_sdk
from kaizen_sdk import errors


def test_all_is_sorted_and_unique() -> None:
    assert kaizen_sdk.__all__ == sorted(set(kaizen_sdk.__all__), key=str)


def test_every_public_name_resolves_and_has_a_docstring() -> None:
    for name in kaizen_sdk.__all__:
        value = getattr(kaizen_sdk, name)
        if name != "__version__":
            assert getattr(value, "__doc__", None), f"{name} has no docstring"


def test_every_error_is_exported() -> None:
    assert set(errors.__all__) - {"error_for_status"} <= set(kaizen_sdk.__all__)
    for name in errors.__all__:
        if name != "error_for_status":
            assert issubclass(getattr(errors, name), errors.CTError)


def test_import_does_not_pull_llm_libraries_or_the_local_server() -> None:
    code = (
        "import sys, kaizen_sdk; "
        "names = ('openai', 'litellm', 'kaizen_sdk.local', 'kaizen_server', 'wrapt'); "
        "bad = [m for m in names if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == ""
