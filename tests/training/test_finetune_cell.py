"""The per-cell fine-tuning loop: LR schedule per step, clipping, best/last epoch, paired initialisation,
and the pre-collated graph batches against the row collator."""

from __future__ import annotations

import math

import pytest
import torch

from mmsa_hf.training import finetune as ft


@pytest.fixture(autouse=True)
def _datasets_cache(training_cache, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", training_cache)
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mmsa_hf.modeling import MMSAConfig, MMSAForPreTraining

    path = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    MMSAForPreTraining(MMSAConfig.from_preset("tiny")).save_pretrained(path)
    return str(path)


@pytest.fixture()
def data(bbbp_subset_csv, tmp_path):
    args = ft.parse_args(["--from_scratch", "--config", "tiny", "--dataset", str(bbbp_subset_csv),
                          "--label_columns", "p_np", "--task_type", "classification", "--split", "random",
                          "--downstream_modalities", "graph", "--output_dir", str(tmp_path)])
    return ft.prepare_data(args)


def _expected_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return step / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_learning_rates_follow_linear_warmup_then_cosine_for_both_groups(data):
    model = ft.build_model(None, "tiny", data["overrides"], seed=0)
    settings = ft.CellSettings(epochs=3, batch_size=16, learning_rate=1e-3, backbone_learning_rate=1e-4,
                               warmup_ratio=0.2, log_steps=True)
    out = ft.finetune_cell(model, data["splits"], "classification", settings, seed=0)
    steps_per_epoch = math.ceil(len(data["splits"]["train"]) / 16)
    total = 3 * steps_per_epoch
    warmup = int(0.2 * total)
    assert len(out["steps"]) == total and warmup >= 2
    for step, logged in enumerate(out["steps"]):
        factor = _expected_factor(step, warmup, total)
        assert logged["lr"] == pytest.approx([1e-4 * factor, 1e-3 * factor], abs=1e-12), step
    assert out["steps"][warmup]["lr"][1] == pytest.approx(1e-3)  # the peak, right after warmup


def test_gradients_are_clipped_to_max_grad_norm_before_each_step(data, monkeypatch):
    seen = []
    original = torch.optim.Adam.step

    def spying_step(self, *args, **kwargs):
        grads = [p.grad.detach().flatten() for g in self.param_groups for p in g["params"] if p.grad is not None]
        seen.append(float(torch.cat(grads).norm()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spying_step)
    model = ft.build_model(None, "tiny", data["overrides"], seed=0)
    settings = ft.CellSettings(epochs=1, batch_size=16, max_grad_norm=0.01, log_steps=True)
    out = ft.finetune_cell(model, data["splits"], "classification", settings, seed=0)
    pre_clip = [s["grad_norm"] for s in out["steps"]]
    assert len(seen) == len(pre_clip) > 0
    assert all(norm > 0.01 for norm in pre_clip)  # clipping had work to do
    assert all(norm <= 0.01 * (1 + 1e-4) for norm in seen)


def test_best_and_last_epoch_are_both_reported_and_a_cell_is_deterministic(data):
    def run(seed):
        model = ft.build_model(None, "tiny", data["overrides"], seed=seed)
        return ft.finetune_cell(model, data["splits"], "classification", ft.CellSettings(epochs=3, batch_size=16),
                                seed=seed)

    first, again, other = run(0), run(0), run(1)
    assert first["last_epoch"] == 2 and first["epochs_run"] == 3 and 0 <= first["best_epoch"] <= 2
    assert first["validation"]["roc_auc"] == max(c["val_roc_auc"] for c in first["curves"][: first["best_epoch"] + 1])
    assert first["last_validation"]["roc_auc"] == first["curves"][-1]["val_roc_auc"]
    assert (first["test"], first["last_test"]) == (again["test"], again["last_test"])
    assert [c["train_loss"] for c in first["curves"]] != [c["train_loss"] for c in other["curves"]]


def test_pretrained_and_scratch_with_one_seed_share_the_head_but_not_the_backbone(data, checkpoint):
    overrides = dict(data["overrides"])
    pretrained = ft.build_model(checkpoint, checkpoint, overrides, seed=3)
    scratch = ft.build_model(None, checkpoint, overrides, seed=3)
    other_seed = ft.build_model(None, checkpoint, overrides, seed=4)
    head = lambda m: torch.cat([p.flatten() for p in m.classifier.parameters()])  # noqa: E731
    assert torch.equal(head(pretrained), head(scratch)) and not torch.equal(head(scratch), head(other_seed))
    from safetensors.torch import load_file

    saved = load_file(f"{checkpoint}/model.safetensors")
    name = next(k for k in saved if k.startswith("mmsa.graph_encoder.convs.0") and k.endswith("weight"))
    assert torch.equal(pretrained.state_dict()[name], saved[name])
    assert not torch.equal(scratch.state_dict()[name], saved[name])
    assert pretrained.config.to_dict()["graph_hidden_size"] == scratch.config.to_dict()["graph_hidden_size"]


def test_pre_collated_graph_batch_equals_the_row_collator(data, bbbp_subset_csv, tmp_path):
    graph = data["splits"]["train"]
    args = ft.parse_args(["--from_scratch", "--config", "tiny", "--dataset", str(bbbp_subset_csv),
                          "--label_columns", "p_np", "--task_type", "classification", "--split", "random",
                          "--output_dir", str(tmp_path)])
    rows = ft.prepare_data(args)["splits"]["train"]  # all views: the row-collated path
    assert isinstance(rows, ft.RowCollatedSet) and len(rows) == len(graph)
    order = [7, 0, 3, 11]
    fast, slow = graph.batch(order), rows.batch(order)
    for key in ("atom_features", "bond_features", "edge_index", "batch", "ptr", "valid_mask", "labels"):
        assert torch.equal(fast[key], slow[key]), key


def test_processor_for_views_asks_for_the_graph_view_with_the_checkpoint_feature_settings(monkeypatch):
    from mmsa_hf.training.common import build_processor

    base = build_processor(image_size=96, max_atoms=200, fragments="largest")
    calls = []

    def build_with_views(image_size=224, views=None, **settings):
        calls.append({"image_size": image_size, "views": views, **settings})
        return "graph-only processor"

    monkeypatch.setattr(ft, "build_processor", build_with_views)
    assert ft.processor_for_views(("graph",), base=base) == "graph-only processor"
    assert calls[0]["views"] == ("graph",) and calls[0]["image_size"] == 96
    assert calls[0]["max_atoms"] == 200 and calls[0]["fragments"] == "largest"


def test_processor_for_views_falls_back_to_the_full_processor_without_the_views_api(monkeypatch):
    monkeypatch.setattr(ft, "build_processor", lambda image_size=224, **settings: ("full", image_size, settings))
    base = object()
    assert ft.processor_for_views(("graph",), base=base) is base
    assert ft.processor_for_views(("graph",), image_size=64) == ("full", 64, {})


def test_frozen_backbone_epochs_train_only_the_head_then_everything(data, checkpoint, capsys):
    model = ft.build_model(checkpoint, checkpoint, dict(data["overrides"]), seed=0)
    backbone = lambda: torch.cat([p.detach().flatten() for p in model.mmsa.parameters()])  # noqa: E731
    head = lambda: torch.cat([p.detach().flatten() for p in model.classifier.parameters()])  # noqa: E731
    flags_before = [p.requires_grad for p in model.parameters()]
    snapshots = [(backbone().clone(), head().clone())]
    on_epoch = lambda record: snapshots.append((backbone().clone(), head().clone()))  # noqa: E731
    settings = ft.CellSettings(epochs=3, batch_size=16, frozen_backbone_epochs=2)
    ft.finetune_cell(model, data["splits"], "classification", settings, seed=0, on_epoch=on_epoch)
    (b0, h0), (b1, h1), (b2, h2), (b3, h3) = snapshots
    assert torch.equal(b0, b1) and torch.equal(b1, b2)  # linear probing: the backbone does not move
    assert not torch.equal(h0, h1) and not torch.equal(h1, h2)  # the head learns
    assert not torch.equal(b2, b3)  # then the whole model is fine-tuned
    assert [p.requires_grad for p in model.parameters()] == flags_before  # every flag restored after the cell
    with pytest.raises(SystemExit):
        ft.parse_args(["--from_scratch", "--epochs", "3", "--frozen_backbone_epochs", "3"])
    assert "--frozen_backbone_epochs must be in [0, --epochs=3)" in capsys.readouterr().err
