"""checksums.json: the sha256 of every weight file, written by save_pretrained / push_to_hub, verified on load.

Real files, the real huggingface_hub client against the local test hub (``hub`` fixture); nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch

from mmsa_hf import MMSAConfig, MMSAForPreTraining, MMSAModel, MMSAProcessor
from mmsa_hf.cli import main
from mmsa_hf.hub import CorruptCheckpointError, load_model, push_to_hub, resolve_checkpoint_dir, verify_checkpoint
from mmsa_hf.modeling.checksums import MANIFEST_NAME, read_manifest, sha256_file, write_manifest

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "test-user/mmsa-checksums"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MMSAForPreTraining(MMSAConfig.from_preset("tiny")).eval()


@pytest.fixture
def saved(tmp_path, model):
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    MMSAProcessor(show_progress=False).save_pretrained(folder)
    return folder


def _zero_middle(path, count=64):
    """``count`` zero bytes written into the middle of the file, in place (same length)."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\0" * count)


def test_save_pretrained_writes_the_manifest(saved):
    records = read_manifest(saved)
    weights = saved / "model.safetensors"
    assert records == {"model.safetensors": {"sha256": sha256_file(weights), "size": weights.stat().st_size}}
    assert json.loads((saved / MANIFEST_NAME).read_text())["algorithm"] == "sha256"
    assert not [p for p in saved.iterdir() if ".partial-" in p.name]
    assert verify_checkpoint(saved) == [weights]


def test_zeroed_bytes_inside_the_weights_are_named(saved):
    weights = saved / "model.safetensors"
    _zero_middle(weights)
    with pytest.raises(CorruptCheckpointError, match="checksums.json") as caught:
        load_model(saved, model_class=MMSAModel)
    assert caught.value.path == str(weights) and str(weights) in str(caught.value)
    # the structural checks alone (and transformers) would have accepted the file
    verify_checkpoint(saved, check_hash=False)


def test_one_flipped_byte_stops_mmsa_embed(saved, tmp_path, capsys):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) - 100] ^= 0x01
    weights.write_bytes(bytes(data))
    (tmp_path / "in.smi").write_text("CCO\n")
    code = main(["embed", "--model", saved, "--input", tmp_path / "in.smi", "--output", tmp_path / "e.parquet",
                 "--no-progress", "--num-proc", "1"])
    err = capsys.readouterr().err
    assert code == 2 and f"Corrupted or incomplete checkpoint file {weights}" in err, err
    assert not (tmp_path / "e.parquet").exists()


def test_without_a_manifest_it_still_loads_with_a_notice(saved, caplog):
    (saved / MANIFEST_NAME).unlink()
    with caplog.at_level(logging.WARNING, logger="mmsa_hf.hub"):
        load_model(saved, model_class=MMSAModel)
    notices = [r.getMessage() for r in caplog.records if r.name == "mmsa_hf.hub"]
    assert len(notices) == 1 and MANIFEST_NAME in notices[0] and "\n" not in notices[0]


def test_manifest_mismatches_are_named(saved):
    records = json.loads((saved / MANIFEST_NAME).read_text())
    records["files"]["model-00002-of-00002.safetensors"] = {"sha256": "0" * 64, "size": 1}
    (saved / MANIFEST_NAME).write_text(json.dumps(records))
    with pytest.raises(CorruptCheckpointError, match="listed in checksums.json but does not exist") as caught:
        verify_checkpoint(saved)
    assert caught.value.path == str(saved / "model-00002-of-00002.safetensors")
    (saved / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="not a valid checksum manifest"):
        verify_checkpoint(saved)


def test_push_uploads_the_manifest_and_the_pull_is_verified(hub, model, tmp_path):
    push_to_hub(model, MMSAProcessor(show_progress=False), REPO)
    from huggingface_hub import HfApi

    assert {"checksums.json", "checksums.py", "model.safetensors"} <= set(HfApi().list_repo_files(REPO))
    loaded = load_model(REPO, model_class=MMSAForPreTraining)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))

    # the snapshot's weights replaced by a damaged copy: the local checksums.json catches it...
    snapshot = resolve_checkpoint_dir(REPO)
    weights = snapshot / "model.safetensors"
    damaged = tmp_path / "damaged.safetensors"
    shutil.copyfile(weights.resolve(), damaged)
    _zero_middle(damaged)
    weights.unlink()
    shutil.copyfile(damaged, weights)
    with pytest.raises(CorruptCheckpointError, match="recorded in checksums.json"):
        load_model(REPO, model_class=MMSAForPreTraining)
    # ...and with a local manifest rewritten to match the damaged file, the Hub's LFS sha256 still does
    os.unlink(snapshot / MANIFEST_NAME)
    write_manifest(snapshot)
    with pytest.raises(CorruptCheckpointError, match="the Hub reports") as caught:
        load_model(REPO, model_class=MMSAForPreTraining)
    assert caught.value.path == str(weights)


def test_auto_model_and_pipelines_check_a_local_checkpoint(saved):
    """``AutoModel.from_pretrained(dir)`` (what ``pipeline(task, model=dir)`` runs) checks checksums.json too."""
    from transformers import AutoModel

    AutoModel.from_pretrained(saved)
    _zero_middle(saved / "model.safetensors")
    with pytest.raises(OSError, match="recorded in checksums.json") as caught:
        AutoModel.from_pretrained(saved)
    assert str(saved / "model.safetensors") in str(caught.value)
