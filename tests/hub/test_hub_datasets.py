"""Hub dataset repos for real: publish a MoleculeNet set with its split to the test hub, load it back with the real,
unpatched ``datasets`` / ``huggingface_hub`` clients, and pretrain from a Hub corpus."""

from __future__ import annotations

import json
import math

import pytest

from mmsa_hf.data import get_split_info, load_moleculenet
from mmsa_hf.data.hub_datasets import METADATA_FILE, publish_moleculenet


def _rows(ds) -> list[tuple]:
    columns = ds.column_names
    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in (row[c] for c in columns))
            for row in ds]


@pytest.fixture
def datasets_cache(hub):
    return str(hub.home / "datasets")  # the isolated datasets cache the hub fixture points datasets.config at


def test_publish_then_load_gives_the_embedded_rows_and_split(hub, datasets_cache):
    commit = publish_moleculenet("bbbp", "test-org/bbbp", cache_dir=datasets_cache)
    repo = hub.repo("test-org/bbbp", repo_type="dataset")
    files = repo.commits[repo.branches["main"]].files
    assert {"README.md", METADATA_FILE, "data/train-00000-of-00001.parquet", "data/validation-00000-of-00001.parquet",
            "data/test-00000-of-00001.parquet"} <= set(files)
    assert files["data/train-00000-of-00001.parquet"].is_lfs  # *.parquet goes through the LFS upload path
    card = hub.file_bytes(files["README.md"]).decode()
    for needle in ("configs:", "split: validation", "scaffold", "Licence", "chemprop", "Hu et al. 2020"):
        assert needle in card, needle

    embedded = load_moleculenet("bbbp", cache_dir=datasets_cache)
    published = load_moleculenet("test-org/bbbp", cache_dir=datasets_cache)
    assert list(published) == ["train", "validation", "test"]
    assert published.split_indices == embedded.split_indices
    for split in embedded:
        assert published[split].features == embedded[split].features
        assert _rows(published[split]) == _rows(embedded[split]), split
    info, reference = get_split_info(published), get_split_info(embedded)
    assert info["source"] == "hub:test-org/bbbp" and info["split_sha256"] == reference["split_sha256"]
    assert published.task.label_columns == embedded.task.label_columns == ("p_np",)

    pinned = load_moleculenet("test-org/bbbp", revision=commit.oid, cache_dir=datasets_cache)
    assert pinned.split_indices == embedded.split_indices
    assert get_split_info(pinned)["source"] == f"hub:test-org/bbbp@{commit.oid}"
    assert hub.requests("GET", "/api/datasets/test-org/bbbp")  # read through the dataset endpoints


def test_published_split_method_is_checked(hub, datasets_cache):
    publish_moleculenet("freesolv", "test-org/freesolv-random", split="random", seed=3, cache_dir=datasets_cache)
    with pytest.raises(ValueError, match="publishes a 'random' split"):
        load_moleculenet("test-org/freesolv-random", cache_dir=datasets_cache)
    dsd = load_moleculenet("test-org/freesolv-random", split="published", cache_dir=datasets_cache)
    assert dsd.split_indices == load_moleculenet("freesolv", split="random", seed=3,
                                                 cache_dir=datasets_cache).split_indices


def test_a_repo_without_metadata_is_a_clear_error(hub, datasets_cache):
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo("test-org/plain", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"smiles,y\nCCO,1\n", path_in_repo="data.csv", repo_id="test-org/plain",
                    repo_type="dataset")
    with pytest.raises(ValueError, match="not a set published by publish_moleculenet"):
        load_moleculenet("test-org/plain", cache_dir=datasets_cache)


def test_pretraining_from_a_hub_corpus_runs(hub, datasets_cache, tmp_path):
    from huggingface_hub import HfApi

    from mmsa_hf.training.pretrain import main as pretrain_main

    smiles = ["CCO", "c1ccccc1O", "CC(=O)O", "CCN", "c1ccncc1", "CCCC", "OCCO", "CC(C)O", "C1CCCCC1", "CCOC"]
    api = HfApi()
    api.create_repo("test-org/tiny-corpus", repo_type="dataset")
    api.upload_file(path_or_fileobj=("smiles\n" + "\n".join(smiles) + "\n").encode(), path_in_repo="corpus.csv",
                    repo_id="test-org/tiny-corpus", repo_type="dataset")
    out = tmp_path / "run"
    pretrain_main(["--config", "tiny", "--corpus", "test-org/tiny-corpus", "--include_test", "--max_steps", "3",
                   "--batch_size", "4", "--output_dir", str(out), "--cpu",
                   "--checkpointing_steps", "100", "--log_every", "1"])
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["source"] == "hub:test-org/tiny-corpus" and corpus["counts"]["molecules"] == len(smiles)
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 3
    assert (out / "final" / "model.safetensors").is_file()


def test_datasets_own_push_to_hub_and_load_dataset_round_trip(hub):
    """The test hub serves what ``datasets`` itself uses to write and read a dataset repo."""
    import datasets

    dsd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"smiles": ["CCO", "CCN", "c1ccccc1"], "y": [1.0, float("nan"), 0.0]}),
        "test": datasets.Dataset.from_dict({"smiles": ["CCCl"], "y": [0.5]}),
    })
    dsd.push_to_hub("test-org/pushed")
    dsd["test"] = datasets.Dataset.from_dict({"smiles": ["CCCl", "CCBr"], "y": [0.5, 0.25]})
    dsd.push_to_hub("test-org/pushed", commit_message="second push")  # replaces the test split file
    loaded = datasets.load_dataset("test-org/pushed")
    assert set(loaded) == {"train", "test"} and loaded["train"]["smiles"][:] == ["CCO", "CCN", "c1ccccc1"]
    assert math.isnan(loaded["train"]["y"][1]) and loaded["test"]["y"][:] == [0.5, 0.25]
    repo = hub.repo("test-org/pushed", repo_type="dataset")
    assert "second push" in [c.title for c in repo.commits.values()]
