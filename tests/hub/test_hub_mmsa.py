"""push_to_hub / pull of MMSA checkpoints against the local test hub, with the real huggingface_hub client."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import load_file

from mmsa_hf import (
    MMSAConfig,
    MMSAForMolecularPropertyPrediction,
    MMSAForPreTraining,
    MMSAModel,
    MMSAProcessor,
)
from mmsa_hf.hub import CorruptCheckpointError, load_model, load_processor, push_to_hub, resolve_checkpoint_dir

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "test-user/mmsa-tiny"
SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
TRAINING_INFO = {
    "args": {"config": "tiny", "corpus": "moleculenet", "num_epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
             "seed": 0},
    "total_steps": 12,
    "summary": {"global_step": 12, "planned_steps": 12, "molecules_seen": 96, "train_seconds": 30.0,
                "molecules_per_s": 3.2, "stopped_by_time_budget": False},
    "corpus": {"source": "moleculenet", "parts": [{"name": "bbbp"}, {"name": "tox21"}],
               "counts": {"rows": 120, "invalid": 2, "duplicates_removed": 10, "excluded_test_molecules": 12,
                          "molecules": 96}, "molecules_used": 96},
}
RESULTS = {
    "task": {"name": "bbbp", "task_type": "classification", "label_columns": ["p_np"]},
    "summary": {"metric": "roc_auc", "test_mean": 0.9123, "test_std": 0.01, "validation_mean": 0.95,
                "validation_std": 0.02},
    "runs": [{"seed": 0}, {"seed": 1}, {"seed": 2}],
    "split": {"kind": "scaffold"},
}


@pytest.fixture(scope="module")
def mmsa():
    torch.manual_seed(0)
    config = MMSAConfig.from_preset("tiny")
    model = MMSAForPreTraining(config).eval()
    processor = MMSAProcessor(show_progress=False)
    return model, processor


def _assert_same_tensors(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _assert_same_batch(a, b):
    assert sorted(a.keys()) == sorted(b.keys())
    for k in a:
        if torch.is_tensor(a[k]):
            assert torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def _cache_blob(hub, filename="model.safetensors") -> Path:
    snapshots = list((hub.cache_dir / f"models--{REPO.replace('/', '--')}" / "snapshots").iterdir())
    assert len(snapshots) == 1
    return (snapshots[0] / filename).resolve()


def test_push_then_pull_in_a_clean_cache(hub, mmsa):
    model, processor = mmsa
    info = push_to_hub(model, processor, REPO, training_info=TRAINING_INFO, commit_message="first push")
    api = HfApi()
    commits = api.list_repo_commits(REPO)
    assert [c.title for c in commits] == ["first push", "initial commit"]  # ONE commit for everything
    assert commits[0].commit_id == info.oid
    files = set(api.list_repo_files(REPO))
    assert {"model.safetensors", "config.json", "README.md", "processor_config.json", "configuration_mmsa.py",
            "modeling_mmsa.py", "processing_mmsa.py", "feature_extraction_mmsa.py", "image_processing_mmsa.py",
            "training_info.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    head = hub.repo(REPO).commits[info.oid]
    assert head.files["model.safetensors"].is_lfs and not head.files["config.json"].is_lfs
    config = json.loads(hub.file_bytes(head.files["config.json"]))
    assert config["auto_map"]["AutoConfig"] == "configuration_mmsa.MMSAConfig"
    assert config["auto_map"]["AutoModel"] == "modeling_mmsa.MMSAModel"
    assert config["auto_map"]["AutoModelForPreTraining"] == "modeling_mmsa.MMSAForPreTraining"
    proc_cfg = json.loads(hub.file_bytes(head.files["processor_config.json"]))
    assert proc_cfg["auto_map"]["AutoProcessor"] == "processing_mmsa.MMSAProcessor"
    assert not hasattr(processor, "auto_map")  # the caller's processor was not mutated

    assert not any(hub.cache_dir.iterdir())  # nothing cached before the pull
    loaded = load_model(REPO, model_class=MMSAForPreTraining)
    assert type(loaded) is MMSAForPreTraining
    _assert_same_tensors(model.state_dict(), loaded.state_dict())
    loaded_processor = load_processor(REPO)
    assert type(loaded_processor) is MMSAProcessor
    _assert_same_batch(processor(SMILES), loaded_processor(SMILES))

    card = ModelCard.load(resolve_checkpoint_dir(REPO) / "README.md")
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert {"chemistry", "molecular-property-prediction", "mmsa"} <= set(card.data.tags)
    assert "2505.05877" in card.text and "12" in card.text and "bbbp" in card.text


def test_push_twice_makes_two_commits_and_revision_pins(hub, mmsa):
    model, processor = mmsa
    first = push_to_hub(model, processor, REPO).oid
    changed = copy.deepcopy(model)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(1.0)
    second = push_to_hub(changed, processor, REPO, commit_message="second push").oid
    assert first != second
    assert [c.commit_id for c in HfApi().list_repo_commits(REPO)][:2] == [second, first]
    _assert_same_tensors(load_model(REPO, model_class=MMSAForPreTraining).state_dict(), changed.state_dict())
    _assert_same_tensors(load_model(REPO, revision=first, model_class=MMSAForPreTraining).state_dict(),
                         model.state_dict())
    # same content again: the client skips the no-op commit and returns the head
    assert push_to_hub(changed, processor, REPO).oid == second
    # a new branch is created on demand; main is untouched
    on_branch = push_to_hub(model, processor, REPO, revision="experiment").oid
    refs = {b.name: b.target_commit for b in HfApi().list_repo_refs(REPO).branches}
    assert refs == {"main": second, "experiment": on_branch}
    # files a push no longer produces can be deleted in the same single commit
    HfApi().upload_file(path_or_fileobj=b"old", path_in_repo="stale/old_shard.txt", repo_id=REPO, revision="experiment")
    n_commits = len(HfApi().list_repo_commits(REPO, revision="experiment"))
    push_to_hub(changed, processor, REPO, revision="experiment", delete_stale_files=True)
    assert len(HfApi().list_repo_commits(REPO, revision="experiment")) == n_commits + 1
    files = HfApi().list_repo_files(REPO, revision="experiment")
    assert "stale/old_shard.txt" not in files and ".gitattributes" in files and "model.safetensors" in files


def test_missing_repo_gives_a_clear_error(hub):
    with pytest.raises(RepositoryNotFoundError) as e:
        load_model("test-user/does-not-exist")
    assert "test-user/does-not-exist" in str(e.value)
    from transformers import AutoModel

    with pytest.raises(OSError, match="test-user/does-not-exist"):
        AutoModel.from_pretrained("test-user/does-not-exist")


def test_truncated_or_corrupted_weights_are_named(hub, mmsa, tmp_path):
    model, processor = mmsa
    push_to_hub(model, processor, REPO)
    directory = resolve_checkpoint_dir(REPO)
    blob = _cache_blob(hub)
    good = blob.read_bytes()

    # a truncated download in the cache (what an interrupted copy leaves behind)
    blob.write_bytes(good[: len(good) - 1000])
    with pytest.raises(CorruptCheckpointError, match="truncated") as e:
        load_model(REPO, model_class=MMSAForPreTraining)
    assert "model.safetensors" in str(e.value) and e.value.path == str(directory / "model.safetensors")
    # from_pretrained raises too (never a silent random init): the checksums.json check names the file first
    with pytest.raises(Exception, match="checksums.json records") as e:
        MMSAForPreTraining.from_pretrained(directory)
    assert "model.safetensors" in str(e.value)

    # same length, flipped bytes inside the tensor data: caught by the sha256 of the cache blob
    corrupted = bytearray(good)
    corrupted[-10:] = bytes(b ^ 0xFF for b in corrupted[-10:])
    blob.write_bytes(bytes(corrupted))
    with pytest.raises(CorruptCheckpointError, match="sha256"):
        load_model(REPO, model_class=MMSAForPreTraining)

    # a local directory
    blob.write_bytes(good)
    local = tmp_path / "local"
    model.save_pretrained(local)
    data = (local / "model.safetensors").read_bytes()
    (local / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(local / "model.safetensors"))):
        load_model(local, model_class=MMSAForPreTraining)
    # force_download repairs the cache
    (local / "model.safetensors").write_bytes(data)
    blob.write_bytes(good[:100])
    fixed = load_model(REPO, model_class=MMSAForPreTraining, force_download=True)
    _assert_same_tensors(model.state_dict(), fixed.state_dict())


def test_loading_never_unpickles(hub, mmsa, monkeypatch):
    model, processor = mmsa
    push_to_hub(model, processor, REPO)

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during load")

    class ForbiddenUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", ForbiddenUnpickler)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor

    _assert_same_tensors(load_model(REPO, model_class=MMSAForPreTraining).state_dict(), model.state_dict())
    _assert_same_batch(load_processor(REPO)(SMILES[:1]), processor(SMILES[:1]))
    # plain transformers loading with mmsa_hf imported: local classes, no remote code, no pickle either
    assert type(AutoModelForPreTraining.from_pretrained(REPO)) is MMSAForPreTraining
    assert type(AutoModel.from_pretrained(REPO)) is MMSAModel
    assert type(AutoProcessor.from_pretrained(REPO)) is MMSAProcessor
    # pickled weights are refused outright
    with pytest.raises(FileNotFoundError, match="never unpickles"):
        directory = resolve_checkpoint_dir(REPO)
        bad = directory.parent / "pickled-only"
        bad.mkdir()
        (bad / "config.json").write_text((directory / "config.json").read_text())
        (bad / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
        load_model(bad)


_REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockMMSA(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mmsa_hf" or name.startswith("mmsa_hf."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

    sys.meta_path.insert(0, BlockMMSA())
    try:
        import mmsa_hf  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("mmsa_hf is importable")

    import torch
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoProcessor

    repo, out, smiles = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    inputs = processor(smiles)
    with torch.no_grad():
        outputs = model(**inputs)
    tensors = {f"state.{k}": v.clone() for k, v in model.state_dict().items()}
    tensors.update({f"inputs.{k}": v.clone() for k, v in inputs.items() if torch.is_tensor(v)})
    tensors.update({f"outputs.{k}": v.clone() for k, v in outputs.items() if torch.is_tensor(v)})
    save_file(tensors, out)
    assert not any(m == "mmsa_hf" or m.startswith("mmsa_hf.") for m in sys.modules)
    print(json.dumps({"model": type(model).__module__ + "." + type(model).__name__,
                      "processor": type(processor).__module__ + "." + type(processor).__name__}))
    """
)


def _run_remote(tmp_path: Path, out: Path, env_extra: dict, cwd: Path) -> dict:
    script = tmp_path / "remote_load.py"
    script.write_text(_REMOTE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(env_extra)
    r = subprocess.run([sys.executable, str(script), REPO, str(out), json.dumps(SMILES)], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-6000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_remote_code_without_mmsa_hf_then_offline(hub, mmsa, tmp_path, offline):
    """transformers alone (mmsa_hf blocked) loads the pushed repo with trust_remote_code, over the test hub; then
    the same cache serves HF_HUB_OFFLINE / local_files_only loads with the hub gone."""
    model, processor = mmsa
    push_to_hub(model, processor, REPO)
    cwd = tmp_path / "elsewhere"  # not the repo root: `mmsa_hf` must not be importable from the cwd either
    cwd.mkdir()
    classes = _run_remote(tmp_path, tmp_path / "online.safetensors", {}, cwd)
    assert classes["model"].startswith("transformers_modules.") and classes["model"].endswith("modeling_mmsa.MMSAModel")
    assert classes["processor"].endswith("processing_mmsa.MMSAProcessor")
    assert hub.requests("GET", "/resolve/") and hub.cdn_requests_with_auth == []

    remote = load_file(tmp_path / "online.safetensors")
    _assert_same_tensors({k[6:]: v for k, v in remote.items() if k.startswith("state.")}, model.mmsa.state_dict())
    local_inputs = processor(SMILES)
    _assert_same_tensors({k[7:]: v for k, v in remote.items() if k.startswith("inputs.")},
                         {k: v for k, v in local_inputs.items() if torch.is_tensor(v)})
    with torch.no_grad():
        local_outputs = MMSAModel.from_pretrained(resolve_checkpoint_dir(REPO)).eval()(**local_inputs)
    for k, v in remote.items():
        if k.startswith("outputs."):
            torch.testing.assert_close(v, local_outputs[k[8:]])

    # ---- offline: the hub is gone; everything comes from the cache filled above
    hub.stop()
    n_requests = len(hub.request_log)
    _assert_same_tensors(load_model(REPO, model_class=MMSAForPreTraining, local_files_only=True).state_dict(),
                         model.state_dict())
    offline()  # HF_HUB_OFFLINE=1
    from transformers import AutoModelForPreTraining

    _assert_same_tensors(AutoModelForPreTraining.from_pretrained(REPO).state_dict(), model.state_dict())
    _assert_same_tensors(load_model(REPO, model_class=MMSAForPreTraining).state_dict(), model.state_dict())
    _assert_same_batch(load_processor(REPO)(SMILES[:1]), processor(SMILES[:1]))
    with pytest.raises((LocalEntryNotFoundError, OSError)):
        load_model("test-user/never-pulled")
    # a fresh interpreter with HF_HUB_OFFLINE=1 in its environment, still without mmsa_hf, using the cached code
    _run_remote(tmp_path, tmp_path / "offline.safetensors", {"HF_HUB_OFFLINE": "1"}, cwd)
    offline_run = load_file(tmp_path / "offline.safetensors")
    assert sorted(offline_run) == sorted(remote)
    for k in remote:
        assert torch.equal(offline_run[k], remote[k]), k
    assert len(hub.request_log) == n_requests


def test_property_model_card_and_push(hub, mmsa):
    _, processor = mmsa
    torch.manual_seed(1)
    config = MMSAConfig.from_preset("tiny", num_labels=1)
    model = MMSAForMolecularPropertyPrediction(config).eval()
    push_to_hub(model, processor, "test-user/mmsa-bbbp", results=RESULTS, training_info=TRAINING_INFO)
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained("test-user/mmsa-bbbp")
    assert type(loaded) is MMSAForMolecularPropertyPrediction
    _assert_same_tensors(loaded.state_dict(), model.state_dict())

    directory = resolve_checkpoint_dir("test-user/mmsa-bbbp")
    assert json.loads((directory / "results.json").read_text())["summary"]["test_mean"] == 0.9123
    card = ModelCard.load(directory / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["license"] == "mit"
    assert "pipeline_tag" not in data  # no Hub pipeline means "molecule in, property out"
    assert data["datasets"] == ["bbbp", "tox21"] and data["metrics"] == ["roc_auc"]
    text = card.text
    for needle in ("## Pretraining", "## Fine-tuning results", "91.23 ± 1.00", "95.00 ± 2.00", "scaffold",
                   "AutoModelForSequenceClassification.from_pretrained(\"test-user/mmsa-bbbp\", trust_remote_code=True)",
                   "import mmsa_hf", "## Design choices that are ours, not the paper's", "GINE",
                   "IEEE Transactions on Image Processing", "arXiv", "2505.05877", "@article{",
                   "Molecules used**: 96"):
        assert needle in text, needle


def test_save_for_hub_registers_nothing_globally(mmsa, tmp_path):
    """save_for_hub writes the processor's code and auto_map through a copy: no class is left registered and a
    plain save of the same processor afterwards still writes no code (no server needed)."""
    from mmsa_hf.hub import save_for_hub
    from mmsa_hf.modeling.modeling_mmsa import AUTO_MAP
    from mmsa_hf.processing import MMSAFeatureExtractor, MMSAImageProcessor

    model, processor = mmsa
    files = save_for_hub(model, processor, tmp_path / "hub")
    assert json.loads((tmp_path / "hub" / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert {"processing_mmsa.py", "feature_extraction_mmsa.py", "image_processing_mmsa.py"} <= set(files)
    assert all(cls._auto_class is None for cls in (MMSAProcessor, MMSAFeatureExtractor, MMSAImageProcessor))
    processor.save_pretrained(tmp_path / "plain")
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["processor_config.json"]
    assert "auto_map" not in json.loads((tmp_path / "plain" / "processor_config.json").read_text())
