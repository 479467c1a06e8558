"""The README's Python examples run as written (those that need no Hub)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    runnable = [b for b in blocks if "my-org/" not in b]
    assert len(runnable) >= 2, "the README lost its processor/model examples"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").symlink_to(README.parent / "checkpoints")  # the examples run from a clone's root
    namespace: dict = {}
    for block in runnable:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["out"].unified_embedding.shape[0] == 3
    assert (tmp_path / "my_processor" / "processor_config.json").is_file()
