"""Fixtures of the ``mmsa`` command-line tests: tiny saved checkpoints, input files with bad rows, and the local
test Hub (the ``hub`` / ``hub_server`` fixtures of ``tests/hub/conftest.py``, re-exposed here).

``pytest_plugins`` is only allowed in the root conftest, so the hub conftest is imported as a plain module
under its own name and its fixture objects are bound to names of this module (pytest collects fixtures from a
conftest's attributes).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = TESTS_DIR.parent
BBBP = REPO_ROOT / "mmsa_hf" / "data" / "moleculenet" / "bbbp.csv.gz"

#: input row -> bad SMILES (empty, unclosed ring, hypervalent xenon, not SMILES at all)
BAD_ROWS = {3: "", 9: "C1CC", 16: "[Xe](F)(F)(F)(F)(F)(F)(F)(F)", 23: "not_a_smiles"}
NUM_GOOD = 22


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


def _bbbp_smiles(n: int) -> list[str]:
    with gzip.open(BBBP, "rt", newline="") as handle:
        rows = [row["smiles"] for _, row in zip(range(n), csv.DictReader(handle))]
    return rows


@pytest.fixture(scope="session")
def smiles() -> list[str]:
    """26 input rows: 22 real BBBP molecules with 4 bad SMILES at rows 3, 9, 16 and 23."""
    good = iter(_bbbp_smiles(NUM_GOOD))
    return [BAD_ROWS[i] if i in BAD_ROWS else next(good) for i in range(NUM_GOOD + len(BAD_ROWS))]


@pytest.fixture(scope="session")
def bad_indices() -> list[int]:
    return sorted(BAD_ROWS)


@pytest.fixture(scope="session")
def good_indices(smiles) -> list[int]:
    return [i for i in range(len(smiles)) if i not in BAD_ROWS]


@pytest.fixture(scope="session")
def inputs(tmp_path_factory, smiles) -> dict[str, Path]:
    """The molecules as a CSV (with another column first), a .smi file (SMILES + name) and a CSV without SMILES."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = {"csv": folder / "molecules.csv", "smi": folder / "molecules.smi", "no_smiles": folder / "names.csv"}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "smiles", "p_np"])
        for i, s in enumerate(smiles):
            writer.writerow([f"mol_{i}", s, i % 2])
    # an empty SMILES is an empty line in a .smi file (row i stays line i)
    paths["smi"].write_text("".join((f"{s}\tmol_{i}\n" if s else "\n") for i, s in enumerate(smiles)))
    with open(paths["no_smiles"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "structure"])
        writer.writerow(["ethanol", "CCO"])
    return paths


def _processor():
    from mmsa_hf import MMSAImageProcessor, MMSAProcessor

    return MMSAProcessor(image_processor=MMSAImageProcessor(image_size=64), show_progress=False)


@pytest.fixture(scope="session")
def pretrain_dir(tmp_path_factory) -> Path:
    """A tiny random-init ``MMSAForPreTraining`` checkpoint with its processor (image_size 64)."""
    from mmsa_hf import MMSAConfig, MMSAForPreTraining

    folder = tmp_path_factory.mktemp("pretrain_ckpt")
    torch.manual_seed(0)
    MMSAForPreTraining(MMSAConfig.from_preset("tiny")).eval().save_pretrained(folder)
    _processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def property_dir(tmp_path_factory) -> Path:
    """A tiny random-init ``MMSAForMolecularPropertyPrediction`` (2 tasks, named in ``id2label``)."""
    from mmsa_hf import MMSAConfig, MMSAForMolecularPropertyPrediction

    folder = tmp_path_factory.mktemp("property_ckpt")
    torch.manual_seed(1)
    config = MMSAConfig.from_preset("tiny", num_labels=2, problem_type="multi_label_classification",
                                    id2label={0: "p_np", 1: "toxic"})
    MMSAForMolecularPropertyPrediction(config).eval().save_pretrained(folder)
    _processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def reference_embeddings(pretrain_dir, smiles, good_indices) -> dict[str, "torch.Tensor"]:
    """``MMSAModel(**processor(valid smiles))`` computed directly: unified + per-view embeddings."""
    from mmsa_hf import MMSAModel, MMSAProcessor

    model = MMSAModel.from_pretrained(pretrain_dir).eval()
    processor = MMSAProcessor.from_pretrained(pretrain_dir)
    with torch.no_grad():
        out = model(**processor([smiles[i] for i in good_indices]))
    return {"embedding": out.unified_embedding.numpy(),
            **{f"{view}_embedding": z.numpy() for view, z in out.view_embeddings.items()}}
