"""Helpers for the training tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def accelerate_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_DATASETS_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_XET="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MMSA_LOG_LEVEL="WARNING")
    return env


def accelerate_cmd(*script_args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            str(REPO / "scripts" / "pretrain.py"), *script_args]
