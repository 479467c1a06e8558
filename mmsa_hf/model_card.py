"""Model cards (README.md) for MMSA checkpoints shared on the Hugging Face Hub.

``generate_model_card(model, processor, training_info, results)`` returns the full README.md text: a YAML metadata
block built with ``huggingface_hub.ModelCardData`` and a Markdown body (what the checkpoint is, pretraining corpus and
steps, fine-tuning results, usage with and without ``trust_remote_code``, the design choices that are ours rather than
the paper's, limitations, citation).

Metadata choices:

* ``library_name: transformers``: every checkpoint is a plain transformers repo (``config.json`` with ``auto_map``,
  ``model.safetensors``, the modeling/processing code next to it), loadable with ``transformers`` alone through
  ``trust_remote_code=True``; ``mmsa_hf`` is only a convenience that registers the same classes locally. With
  ``transformers`` the Hub shows the right "Use this model" snippet and download counting (it counts ``config.json``
  fetches). ``mmsa_hf`` is listed in ``tags`` instead, together with ``custom_code`` (the Hub's tag for repos that
  ship their own code).
* no ``pipeline_tag``: none of the Hub's pipeline tags runs an MMSA checkpoint (transformers' ``feature-extraction``
  pipeline needs a tokenizer; no Hub task means "molecule in, property out"), and a wrong tag would advertise an
  inference widget that cannot work. The checkpoints run in transformers' ``pipeline()`` through the custom tasks
  ``molecular-feature-extraction`` / ``molecular-property-prediction`` (``mmsa_hf.pipelines``), declared in
  ``config.json`` (``custom_pipelines``) when the repo is saved with its processor; the card's usage section shows
  that call and the tags name the task.
* ``license: mit`` (the licence of this code base; weights trained here inherit it, datasets keep theirs).
* ``datasets``: the names of the pretraining corpus parts and of the fine-tuning datasets, as given in
  ``training_info`` / ``results`` (MoleculeNet has no canonical Hub dataset id).
* ``metrics``: the metrics that appear in ``results`` (``roc_auc``, ``rmse``, ``mae``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

PAPER_TITLE = "Multi-Modal Molecular Representation Learning via Structure Awareness"
PAPER_ARXIV = "2505.05877"
PAPER_URL = f"https://arxiv.org/abs/{PAPER_ARXIV}"
PAPER_VENUE = "IEEE Transactions on Image Processing"

CITATION = """\
@article{yin2025mmsa,
  title         = {Multi-Modal Molecular Representation Learning via Structure Awareness},
  author        = {Yin, Rong and Liu, Ruyue and Hao, Xiaoshuai and Zhou, Xingrui and Liu, Yong and Ma, Can and Wang, Weiping},
  journal       = {IEEE Transactions on Image Processing},
  year          = {2025},
  eprint        = {2505.05877},
  archivePrefix = {arXiv},
  primaryClass  = {cs.LG},
  url           = {https://arxiv.org/abs/2505.05877}
}"""

LICENSE = "mit"
BASE_TAGS = ["chemistry", "molecular-property-prediction", "mmsa", "molecules", "multimodal", "graph-neural-network",
             "hypergraph", "custom_code"]

# Design choices that are ours rather than the paper's (only the abstract of the paper is public). This is the
# list the model card prints; ``docs/method.md`` is the long form. The modeling/processing code may refine it:
# replace or extend this list (e.g. ``model_card.DESIGN_CHOICES[:] = [...]``) or pass ``design_choices=`` to
# ``generate_model_card``; a model config may also carry its own list as ``config.design_choices``.
DESIGN_CHOICES: list[str] = [
    "Input featurisation: OGB-style categorical atom (9 columns) and bond (3 columns) features on RDKit's "
    "hydrogen-suppressed graph; every column has an explicit 'unknown' bucket.",
    "3D view: one RDKit conformer per molecule (ETKDGv3 with a fixed seed, then MMFF), with a per-molecule time "
    "limit and a fallback ladder ETKDG -> random-coordinate embedding -> 2D coordinates, recorded per molecule.",
    "Image view: an RDKit 2D depiction rendered to an RGB image (224 px by default) and normalised per channel.",
    "Encoders: a GINE network for the 2D graph, an E(3)-invariant SchNet-style network (Gaussian radial basis, "
    "radius graph) for the conformer, a transformers ResNet for the image; their depths and widths are ours.",
    "Fusion: a small transformer over a learned [FUSE] token plus the three projected view tokens gives the "
    "unified embedding; random modality dropout in training is optional.",
    "Structure awareness: hyperedges join each molecule with its k nearest molecules of the batch in every view, "
    "plus an anchor hyperedge to its nearest memory anchors; residual HypergraphConv layers refine the embedding.",
    "Memory bank: K anchors updated by EMA (or by gradient), soft assignments with a temperature, and "
    "Sinkhorn-Knopp swapped-prediction targets for the memory alignment loss.",
    "Objectives: cross-view InfoNCE, cross-view embedding reconstruction (cosine), hypergraph consistency and "
    "memory alignment, with weights 1, 1, 0.5, 0.5 by default; optimiser, schedule and batch size are ours.",
    "Pretraining corpus: the MoleculeNet molecules embedded in this package, de-duplicated by canonical SMILES, "
    "with the test molecules of the downstream scaffold splits excluded (not the paper's corpus).",
    "Fine-tuning: scaffold split, several seeds, a fresh property head (linear or 2-layer MLP) on the unified or "
    "graph embedding, NaN-masked BCE for multi-task classification, normalised MSE for regression.",
]

_METHOD_DOC_URL = "docs/method.md"
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_FILE_SUFFIXES = (".csv", ".gz", ".smi", ".txt", ".parquet", ".json", ".jsonl", ".sdf", ".tsv")


# ------------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------------


def _fmt(x: Any, digits: int = 4) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:.{digits}g}"
    return str(x)


def _model_info(model) -> dict[str, Any]:
    config = getattr(model, "config", None)
    n_params = None
    try:
        n_params = sum(p.numel() for p in model.parameters())
    except Exception:  # pragma: no cover - not a torch module
        pass
    return {
        "class": type(model).__name__,
        "config_class": type(config).__name__ if config is not None else None,
        "model_type": getattr(config, "model_type", None),
        "n_params": n_params,
        "config": config,
    }


def auto_class_for(model) -> str:
    """The transformers Auto class a user should load this checkpoint with (used in the usage snippet)."""
    name = type(model).__name__
    auto_map = getattr(getattr(model, "config", None), "auto_map", None) or {}
    registered = getattr(type(model), "_auto_class", None)
    if registered:
        return registered
    for auto_name, target in auto_map.items():
        if auto_name.startswith("AutoModel") and str(target).endswith("." + name):
            return auto_name
    if "PropertyPrediction" in name or "SequenceClassification" in name:
        return "AutoModelForSequenceClassification"
    if "Pretraining" in name or "PreTraining" in name:
        return "AutoModelForPreTraining"
    return "AutoModel"


def _normalise_results(results: Any) -> list[dict[str, Any]]:
    """Accept one fine-tuning results dict (``mmsa_hf.training.finetune``), a list of them, a mapping
    name -> results dict, or a flat mapping ``{dataset: {metric: value}}``; return table rows."""
    if not results:
        return []
    if isinstance(results, Mapping) and "summary" in results:
        items: Iterable[tuple[str | None, Any]] = [(None, results)]
    elif isinstance(results, Mapping):
        items = results.items()
    elif isinstance(results, (list, tuple)):
        items = [(None, r) for r in results]
    else:
        raise TypeError(f"results must be a dict or a list of dicts, got {type(results).__name__}")
    rows = []
    for name, r in items:
        if not isinstance(r, Mapping):
            raise TypeError(f"results entry {name!r} must be a dict, got {type(r).__name__}")
        if "summary" in r:
            s, task = r["summary"], r.get("task", {}) or {}
            metric = s.get("metric", "metric")
            row = {
                "dataset": task.get("name") or name or "?",
                "task_type": task.get("task_type", ""),
                "n_tasks": len(task.get("label_columns") or []) or None,
                "split": (r.get("split") or {}).get("kind", ""),
                "seeds": len(r.get("runs") or []) or None,
                "metric": metric,
                "test": (s.get("test_mean"), s.get("test_std")),
                "validation": (s.get("validation_mean"), s.get("validation_std")),
            }
            rows.append(row)
            if "test_mae_mean" in s:
                rows.append({**row, "metric": "mae", "test": (s.get("test_mae_mean"), s.get("test_mae_std")),
                             "validation": (None, None)})
        else:  # flat {metric: value} (value may be a number or (mean, std))
            for metric, value in r.items():
                mean, std = (value if isinstance(value, (list, tuple)) else (value, None))
                rows.append({"dataset": name or "?", "task_type": "", "n_tasks": None, "split": "", "seeds": None,
                             "metric": metric, "test": (mean, std), "validation": (None, None)})
    return rows


def _mean_std(pair: tuple[Any, Any], metric: str) -> str:
    mean, std = pair
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    scale = 100.0 if metric == "roc_auc" else 1.0
    text = f"{scale * mean:.2f}" if isinstance(mean, (int, float)) else str(mean)
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += f" ± {scale * std:.2f}"
    return text


def _results_section(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Fine-tuning results",
        "",
        "Mean ± standard deviation over fine-tuning seeds (ROC-AUC is reported × 100).",
        "",
        "| dataset | task | split | seeds | metric | test | validation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        task = r["task_type"] + (f" ({r['n_tasks']} tasks)" if r["n_tasks"] and r["n_tasks"] > 1 else "")
        metric = "ROC-AUC" if r["metric"] == "roc_auc" else r["metric"].upper()
        lines.append(
            f"| {r['dataset']} | {task or '–'} | {r['split'] or '–'} | {r['seeds'] or '–'} | {metric} | "
            f"{_mean_std(r['test'], r['metric'])} | {_mean_std(r['validation'], r['metric'])} |"
        )
    return "\n".join(lines)


def _training_section(training_info: Mapping[str, Any]) -> str:
    args = training_info.get("args") or {}
    summary = training_info.get("summary") or {}
    corpus = training_info.get("corpus") or {}
    counts = corpus.get("counts") or {}
    lines = ["## Pretraining", ""]
    source = corpus.get("source") or args.get("corpus")
    if source:
        parts = corpus.get("parts")
        part_names = [p.get("name", str(p)) if isinstance(p, Mapping) else str(p) for p in parts] if parts else []
        lines.append(f"- **Corpus**: `{source}`" + (f" ({', '.join(part_names)})" if part_names else ""))
    molecules = corpus.get("molecules_used", counts.get("molecules"))
    if molecules is not None:
        detail = []
        for key, label in (("rows", "rows read"), ("invalid", "invalid"), ("duplicates_removed", "duplicates removed"),
                           ("excluded_test_molecules", "downstream test molecules excluded")):
            if counts.get(key) is not None:
                detail.append(f"{_fmt(counts[key])} {label}")
        lines.append(f"- **Molecules used**: {_fmt(molecules)}" + (f" ({'; '.join(detail)})" if detail else ""))
    steps = summary.get("global_step", training_info.get("total_steps"))
    if steps is not None:
        planned = summary.get("planned_steps", training_info.get("total_steps"))
        text = f"- **Optimisation steps**: {_fmt(steps)}"
        if planned is not None and planned != steps:
            text += f" of {_fmt(planned)} planned"
        if summary.get("stopped_by_time_budget"):
            text += " (stopped by the time budget)"
        lines.append(text)
    if summary.get("molecules_seen") is not None:
        lines.append(f"- **Molecules seen**: {_fmt(summary['molecules_seen'])}")
    hp = [(k, args[k]) for k in ("config", "num_epochs", "batch_size", "learning_rate", "weight_decay",
                                  "warmup_ratio", "gradient_accumulation_steps", "mixed_precision", "seed")
          if args.get(k) is not None]
    if hp:
        lines.append("- **Hyper-parameters**: " + ", ".join(f"`{k}={v}`" for k, v in hp))
    ablations = [k for k in ("no_image", "no_geometry", "no_hypergraph", "no_memory") if args.get(k)]
    if ablations:
        lines.append("- **Ablations**: " + ", ".join(f"`{a}`" for a in ablations))
    if summary.get("train_seconds") is not None:
        lines.append(f"- **Training time**: {summary['train_seconds'] / 60:.1f} min"
                     + (f" ({summary['molecules_per_s']:.1f} molecules/s)" if summary.get("molecules_per_s") else ""))
    if training_info.get("num_processes"):
        lines.append(f"- **Processes**: {training_info['num_processes']}")
    extra = {k: v for k, v in training_info.items()
             if k not in ("args", "summary", "corpus", "model_config", "processor", "total_steps", "steps_per_epoch",
                          "num_processes") and isinstance(v, (str, int, float, bool))}
    for k, v in extra.items():
        lines.append(f"- **{k}**: {_fmt(v)}")
    if len(lines) == 2:
        lines.append("No pretraining information was recorded for this checkpoint.")
    return "\n".join(lines)


def _usage_section(repo_id: str, auto_class: str, has_processor: bool) -> str:
    proc_import = ", AutoProcessor" if has_processor else ""
    proc_line = f'processor = AutoProcessor.from_pretrained("{repo_id}")\n' if has_processor else ""
    proc_line_remote = (
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)\n' if has_processor else ""
    )
    call = (
        'inputs = processor(["CCO", "c1ccccc1O"])  # SMILES strings or RDKit molecules\n'
        "outputs = model(**inputs)\n" if has_processor else ""
    )
    return f"""## Usage

With the `mmsa_hf` package installed (importing it registers the MMSA classes with the transformers Auto classes,
so no code from the repository is executed):

```python
import mmsa_hf  # noqa: F401
from transformers import {auto_class}{proc_import}

{proc_line}model = {auto_class}.from_pretrained("{repo_id}")
{call}```

With `transformers` alone: the repository carries the modeling and processing code (`auto_map` in `config.json`
and `processor_config.json`). Read it before running it, and pin a commit with `revision=`:

```python
from transformers import {auto_class}{proc_import}

{proc_line_remote}model = {auto_class}.from_pretrained("{repo_id}", trust_remote_code=True)
{call}```

{_pipeline_usage(repo_id, auto_class) if has_processor else ""}Weights are stored as `model.safetensors` only; \
loading never unpickles anything. The processing code needs RDKit (`pip install rdkit`).
"""


def _pipeline_usage(repo_id: str, auto_class: str) -> str:
    """The ``pipeline()`` snippet: the repo's ``config.json`` declares the custom pipeline (``custom_pipelines``)."""
    backbone = auto_class in ("AutoModel", "AutoModelForPreTraining")
    task = "molecular-feature-extraction" if backbone else "molecular-property-prediction"
    shows = "embedding" if backbone else "predictions (one value per task, named by config.id2label)"
    return f"""As a transformers pipeline (`{task}`, declared in `config.json` under `custom_pipelines`, code in
`pipeline_mmsa.py`). transformers runs a repository's custom pipeline only with `trust_remote_code=True`, with or
without `mmsa_hf` installed:

```python
from transformers import pipeline

pipe = pipeline("{task}", model="{repo_id}", trust_remote_code=True)
rows = pipe(["CCO", "c1ccccc1O"], batch_size=32)  # one dict per molecule: smiles, valid, error, {shows}
```

"""


def _config_section(info: Mapping[str, Any]) -> str:
    config = info.get("config")
    lines = ["## Checkpoint", "", f"- **Class**: `{info['class']}`"]
    if info.get("n_params") is not None:
        lines.append(f"- **Parameters**: {_fmt(info['n_params'])}")
    if config is not None:
        keys = [k for k in ("hidden_size", "graph_num_layers", "graph_hidden_size", "geometry_num_layers",
                            "geometry_hidden_size", "fusion_num_layers", "fusion_num_heads", "use_image", "use_geometry",
                            "use_hypergraph", "use_memory", "hypergraph_k", "hypergraph_anchor_k",
                            "memory_num_anchors", "downstream_modalities", "downstream_embedding", "num_labels",
                            "problem_type")
                if getattr(config, k, None) not in (None, [], {})]
        if keys:
            lines.append("- **Config**: " + ", ".join(f"`{k}={getattr(config, k)}`" for k in keys))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------------------------


def generate_model_card(
    model,
    processor=None,
    training_info: Mapping[str, Any] | None = None,
    results: Any = None,
    *,
    repo_id: str | None = None,
    design_choices: list[str] | None = None,
    base_model: str | list[str] | None = None,
    extra_tags: list[str] | None = None,
    license: str = LICENSE,
) -> str:
    """Return the README.md (YAML metadata + Markdown body) for an MMSA checkpoint.

    Args:
        model: the model being shared (``MMSAModel``, ``MMSAForPreTraining``, ``MMSAForMolecularPropertyPrediction``
            or any ``PreTrainedModel``).
        processor: the processor shipped with it (only used to decide whether the usage snippet shows it).
        training_info: the pretraining record written by ``mmsa_hf.training.pretrain`` (``training_info.json``:
            ``args``, ``summary``, ``corpus``...). Missing keys are skipped.
        results: fine-tuning results, as written by ``mmsa_hf.training.finetune`` (``results.json``), a list or a
            ``{name: results}`` mapping of those, or a flat ``{dataset: {metric: value or (mean, std)}}``.
        repo_id: used in the usage snippet (``"<repo_id>"`` if omitted).
        design_choices: overrides :data:`DESIGN_CHOICES` (then ``config.design_choices`` if present).
        base_model: Hub id(s) of the checkpoint this one was fine-tuned from (metadata ``base_model``).
    """
    training_info = dict(training_info or {})
    rows = _normalise_results(results)
    info = _model_info(model)
    auto_class = auto_class_for(model)
    card_data = _card_metadata(training_info, rows, auto_class, processor is not None, base_model, extra_tags, license)
    if design_choices is None:
        design_choices = list(getattr(info.get("config"), "design_choices", None) or DESIGN_CHOICES)
    body = [
        *_introduction(repo_id, auto_class),
        _config_section(info),
        "",
        _training_section(training_info) if training_info else "## Pretraining\n\nNo pretraining information was "
        "recorded for this checkpoint.",
        "",
        *([_results_section(rows), ""] if rows else []),
        _usage_section(repo_id or "<repo_id>", auto_class, processor is not None),
        *_closing_sections(design_choices),
    ]
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body)))


def _card_metadata(training_info, rows, auto_class, has_processor, base_model, extra_tags, license):
    """The YAML header: datasets (names or Hub ids, never local files), metrics and tags."""
    datasets: list[str] = []
    corpus = training_info.get("corpus") or {}
    names = [p.get("name") if isinstance(p, Mapping) else p for p in corpus.get("parts") or []]
    for name in names + [r["dataset"] for r in rows]:
        # dataset names or Hub ids only: a local file used as corpus ("/data/my.csv") is not metadata
        if (isinstance(name, str) and _DATASET_NAME.match(name) and not name.lower().endswith(_FILE_SUFFIXES)
                and name not in datasets):
            datasets.append(name)
    metrics = sorted({r["metric"] for r in rows})
    is_backbone = auto_class in ("AutoModel", "AutoModelForPreTraining")
    tags = list(BASE_TAGS) + [t for t in (extra_tags or []) if t not in BASE_TAGS]
    if has_processor:  # save_for_hub then declares the custom pipelines in config.json
        tags.append("molecular-feature-extraction" if is_backbone else "molecular-property-prediction")
    if training_info:
        tags.append("pretrained")
    if rows:
        tags.append("fine-tuned")
    return ModelCardData(
        library_name="transformers",
        license=license,
        tags=list(dict.fromkeys(tags)),
        datasets=datasets or None,
        metrics=metrics or None,
        pipeline_tag=None,  # see the module docstring: no Hub pipeline runs these checkpoints
        base_model=base_model,
    )


def _introduction(repo_id: str | None, auto_class: str) -> list[str]:
    title = repo_id.split("/")[-1] if repo_id else "MMSA"
    kind = {
        "AutoModel": "the MMSA encoder (backbone): it maps a batch of molecules to one embedding per molecule",
        "AutoModelForPreTraining": "the MMSA encoder with its self-supervised pretraining heads and memory bank",
    }.get(auto_class, "an MMSA encoder fine-tuned with a molecular property prediction head")
    return [
        f"# {title}",
        "",
        f"This repository holds {kind}. MMSA (*{PAPER_TITLE}*, {PAPER_VENUE}, arXiv [{PAPER_ARXIV}]({PAPER_URL})) "
        "encodes each molecule from three views (2D graph, 3D conformer, 2D depiction image), fuses them into one "
        "embedding, refines it with a hypergraph over the molecules of a batch and aligns it with the anchors of a "
        "memory bank.",
        "",
        "**This is an independent re-implementation**, not the authors' code or weights: only the paper's abstract is "
        "public, so every detail it does not fix is our choice (listed below).",
        "",
    ]


def _closing_sections(design_choices: list[str]) -> list[str]:
    return [
        "## Design choices that are ours, not the paper's",
        "",
        *[f"- {c}" for c in design_choices],
        "",
        f"The long form is `{_METHOD_DOC_URL}` in the `mmsa_hf` source tree.",
        "",
        "## Limitations",
        "",
        "- Not the paper's weights, corpus or exact architecture: numbers are not comparable to the paper's tables "
        "without re-running its protocol.",
        "- Conformers and depictions come from RDKit; molecules RDKit cannot parse are skipped or masked by the "
        "processor, and a conformer that fails to embed falls back to 2D coordinates (recorded per molecule).",
        "- Property predictions are research outputs, not validated for clinical or safety decisions.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]


def training_info_markdown(training_info: Mapping[str, Any]) -> str:
    """The pretraining section alone (handy for logs)."""
    return _training_section(training_info)


def results_json(results: Any) -> str:
    """The normalised results rows as JSON (debugging aid)."""
    return json.dumps(_normalise_results(results), indent=2, default=str)
