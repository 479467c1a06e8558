"""Fixtures of the shipped-checkpoint tests: the local test Hub of ``tests/hub/conftest.py``, re-exposed (see
``tests/cli/conftest.py`` for why it is imported as a module)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]


def _load_hub_conftest():
    name = "_mmsa_tests_hub_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, TESTS_DIR / "hub" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_hub_conftest = _load_hub_conftest()
hub_server = _hub_conftest.hub_server
hub = _hub_conftest.hub
