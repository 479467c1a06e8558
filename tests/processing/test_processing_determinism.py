"""Identical tensors on a repeated call, in a new process and with several worker processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch


REPO_ROOT = Path(__file__).resolve().parents[2]


def _assert_same(a, b) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def test_repeat_call(processor, bbbp_small, bbbp_small_batch):
    _assert_same(processor(bbbp_small), bbbp_small_batch)
    first, second = processor.featurize(bbbp_small[:3]), processor.featurize(bbbp_small[:3])
    assert [r["image_png"] for r in first] == [r["image_png"] for r in second]  # byte-identical PNGs


def test_new_process(tmp_path, bbbp_small, bbbp_small_batch):
    """A fresh interpreter gives identical tensors. It loads the flat processing folder on its own, as Hub remote
    code is loaded (and without the modeling package's import time)."""
    out_file = tmp_path / "batch.npz"
    package_dir = REPO_ROOT / "mmsa_hf" / "processing"
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        import numpy as np
        spec = importlib.util.spec_from_file_location(
            "mmsa_processing_standalone", {str(package_dir / "__init__.py")!r},
            submodule_search_locations=[{str(package_dir)!r}],
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        assert "mmsa_hf" not in sys.modules
        out = module.MMSAProcessor(show_progress=False)({list(bbbp_small)!r}, return_tensors="np")
        arrays = {{k: v for k, v in out.items() if k != "smiles"}}
        np.savez({str(out_file)!r}, smiles=np.asarray(out["smiles"]), **arrays)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    saved = np.load(out_file)
    for key, value in bbbp_small_batch.items():
        if key == "smiles":
            assert saved[key].tolist() == value
        else:
            assert np.array_equal(saved[key], value.numpy()), key
            assert saved[key].dtype == value.numpy().dtype, key


def test_num_proc_matches_serial_and_keeps_order(processor, bbbp_small, bbbp_small_batch, tox21):
    _assert_same(processor(bbbp_small, num_proc=2), bbbp_small_batch)
    # order is kept across chunks, with masked and skipped rows interleaved
    mixed = [bbbp_small[0], "", bbbp_small[1], tox21[1322], bbbp_small[2], None, bbbp_small[3]]
    _assert_same(processor(mixed, on_error="mask", num_proc=2), processor(mixed, on_error="mask", num_proc=1))
    skipped = processor(mixed, on_error="skip", num_proc=2)
    assert skipped["input_indices"].tolist() == [0, 2, 4, 6]


def test_num_proc_raise_names_first_bad_index(processor, bbbp_small):
    import pytest

    with pytest.raises(ValueError, match="index 2"):
        processor([bbbp_small[0], bbbp_small[1], "not a smiles", "", bbbp_small[2]], num_proc=2)
