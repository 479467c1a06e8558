r"""Per-atom explanations of a fine-tuned MMSA property model: which atoms drive each prediction.

Method: **occlusion of the atom input embeddings** of the 2D graph encoder (our choice; see ``docs/method.md``,
"Explanations"). For molecule :math:`m`, task :math:`t` and heavy atom :math:`i`,

.. math::  a_{i,t} = y_t(\mathbf{h}^{(0)}) - y_t(\mathbf{h}^{(0)} \text{ with } \mathbf{h}^{(0)}_i = \mathbf{0})

where :math:`\mathbf{h}^{(0)}_i` is atom :math:`i`'s input embedding (the sum of its categorical-feature embeddings,
before any GINE layer): the atom stays in the graph, with its bonds, but the model no longer sees what it is.
:math:`y_t` is the logit for classification (per task, or per class for multi-class) and the prediction in label
units for regression. Positive values: the atom pushes the output up (towards the class, or a larger value). All
:math:`n` occlusions of a molecule run as one eval-mode batch of :math:`n + 1` copies (molecules are independent in
eval mode), so attributions are deterministic and do not depend on other molecules. Only the graph view's atom
inputs are occluded: for a model that also reads the 3D / image views (``downstream_modalities``) those views stay
as they are. (Gradient x input on the same embeddings was tried first: on the nitro-detecting test model of
``tests/cli/test_cli_explain.py`` it ranked a nitro atom first in 9 of 13 nitro compounds, occlusion in 13 of 13.)

Attributions come in RDKit heavy-atom order of the processor's molecule (``processor.feature_extractor.
prepare_molecule``), which is ``Chem.MolFromSmiles(smiles)``'s order. :func:`explain` draws each one on the molecule
(RDKit similarity map: green = positive, pink = negative) as PNG and SVG, and writes the numbers as CSV and JSON.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

METHOD = "occlusion_of_atom_input_embeddings"


@dataclass
class MoleculeExplanation:
    """Attributions of one molecule: ``attributions[task]`` has one value per heavy atom, in RDKit order."""

    smiles: str
    valid: bool
    canonical_smiles: str | None = None
    error: str | None = None
    atom_symbols: list[str] = field(default_factory=list)
    predictions: dict[str, float] = field(default_factory=dict)
    attributions: dict[str, np.ndarray] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    mol: Any = field(default=None, repr=False)  # the RDKit molecule the atoms index (processor's preparation)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but ``mol``; attributions as lists."""
        out = {k: v for k, v in vars(self).items() if k != "mol"}
        out["attributions"] = {task: [float(v) for v in values] for task, values in self.attributions.items()}
        return out


def task_names(config) -> list[str]:
    """The output names of a property model: ``config.id2label`` (class names for multi-class)."""
    return [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]


def _resolve_tasks(config, tasks: Sequence[str] | None) -> list[int]:
    names = task_names(config)
    if tasks is None:
        return list(range(len(names)))
    unknown = [t for t in tasks if t not in names]
    if unknown:
        raise ValueError(f"tasks {unknown} are not outputs of this model; its outputs are {names[:20]}")
    return [names.index(t) for t in tasks]


def _check_model(model) -> None:
    if not hasattr(model, "classifier") or not hasattr(model, "mmsa"):
        raise ValueError(f"explanations need a fine-tuned MMSAForMolecularPropertyPrediction, got "
                         f"{type(model).__name__}")


def _outputs(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-task outputs attributed (logits, or predictions in label units for regression) and the
    predictions, for every molecule of ``batch``."""
    output = model(**batch)
    if model.config.resolved_problem_type == "regression":
        return output.predictions, output.predictions
    return output.logits, output.predictions


def _occluded_outputs(model, processor, record, views) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of ``n + 1`` copies of one molecule: copy ``k < n`` with atom ``k``'s input embedding zeroed, copy
    ``n`` intact."""
    n = len(record["atom_features"])
    device = next(model.parameters()).device
    batch = processor.collate([record] * (n + 1), return_tensors="pt", views=views)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    occluded = torch.arange(n, device=device) * n + torch.arange(n, device=device)  # atom k of copy k

    def zero_atoms(module, args, output):
        keep = torch.ones(output.size(0), 1, dtype=output.dtype, device=output.device)
        keep[occluded] = 0
        return output * keep

    hook = model.mmsa.graph_encoder.atom_encoder.register_forward_hook(zero_atoms)
    try:
        with torch.no_grad():
            return _outputs(model, batch)
    finally:
        hook.remove()


def _explain_one(model, processor, molecule, task_ids: list[int], names: list[str], views) -> MoleculeExplanation:
    from rdkit import Chem

    try:
        mol = processor.feature_extractor.prepare_molecule(molecule)
        record = processor.featurize_one(mol, 0, views=views)
    except Exception as err:  # MoleculeError, or any RDKit failure on this molecule
        return MoleculeExplanation(smiles=str(molecule), valid=False, error=f"{type(err).__name__}: {err}")
    targets, predictions = _occluded_outputs(model, processor, record, views)
    full = targets[-1]
    values = {names[t]: (full[t] - targets[:-1, t]).double().cpu().numpy() for t in task_ids}
    smiles = Chem.MolToSmiles(molecule) if isinstance(molecule, Chem.Mol) else str(molecule)
    return MoleculeExplanation(
        smiles=smiles, valid=True, canonical_smiles=record["smiles"],
        atom_symbols=[a.GetSymbol() for a in mol.GetAtoms()],
        predictions={names[t]: float(predictions[-1, t]) for t in task_ids}, attributions=values, mol=mol)


def atom_attributions(model, processor, molecules, tasks: Sequence[str] | None = None) -> list[MoleculeExplanation]:
    """Occlusion attributions of every heavy atom, for each task (default: all), of each molecule.

    ``molecules``: a SMILES / RDKit ``Mol`` or a list of them. An invalid molecule gives ``valid=False`` and its
    ``error``; it never stops the others. Only the views the model reads are featurized.
    """
    from .training.common import views_for_config

    _check_model(model)
    model.eval()
    task_ids = _resolve_tasks(model.config, tasks)
    names = task_names(model.config)
    views = views_for_config(model.config, "property")
    processor = processor.with_views(views)
    molecules = [molecules] if isinstance(molecules, str) or not isinstance(molecules, Sequence) else molecules
    return [_explain_one(model, processor, m, task_ids, names, views) for m in molecules]


def draw_attributions(mol, weights: Sequence[float], path_stem: str | os.PathLike, size: int = 400) -> list[str]:
    """Draw ``weights`` (one per atom of ``mol``, RDKit order) as an RDKit similarity map; writes
    ``<path_stem>.png`` and ``<path_stem>.svg`` and returns their paths."""
    from rdkit.Chem.Draw import SimilarityMaps, rdMolDraw2D

    weights = [float(w) for w in weights]
    if len(weights) != mol.GetNumAtoms():
        raise ValueError(f"{len(weights)} weights for a molecule of {mol.GetNumAtoms()} atoms")
    if not any(weights):  # the similarity map divides by the largest |weight|
        weights = [0.0] * len(weights)
    paths = []
    for suffix, canvas in (("png", rdMolDraw2D.MolDraw2DCairo), ("svg", rdMolDraw2D.MolDraw2DSVG)):
        drawer = canvas(size, size)
        SimilarityMaps.GetSimilarityMapFromWeights(mol, weights, draw2d=drawer)
        drawer.FinishDrawing()
        path = Path(f"{os.fspath(path_stem)}.{suffix}")
        text = drawer.GetDrawingText()
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        paths.append(str(path))
    return paths


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "task"


def _write_csv(explanations: list[MoleculeExplanation], path: Path) -> None:
    tasks = next((list(e.attributions) for e in explanations if e.valid), [])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["molecule", "smiles", "canonical_smiles", "atom_index", "element", *tasks])
        for m, e in enumerate(explanations):
            for i, symbol in enumerate(e.atom_symbols):
                values = [f"{e.attributions[t][i]:.9g}" for t in tasks]
                writer.writerow([m, e.smiles, e.canonical_smiles, i, symbol, *values])


def explain(model, molecules, output_dir: str | os.PathLike, processor=None, tasks: Sequence[str] | None = None,
            size: int = 400) -> list[MoleculeExplanation]:
    """Attribute, draw and write: ``mol<i>_<task>.png`` / ``.svg`` per valid molecule and task,
    ``attributions.csv`` (one row per atom, one column per task) and ``explanations.json`` (predictions,
    attributions, files, errors). ``model`` is a loaded model or a checkpoint directory / Hub id."""
    if not hasattr(model, "config"):
        from .inference import load_for_inference

        model, loaded_processor, _ = load_for_inference(os.fspath(model), mode="predict")
        processor = processor or loaded_processor
    if processor is None:
        raise ValueError("explain: pass the processor saved with the model (or a checkpoint path)")
    explanations = atom_attributions(model, processor, molecules, tasks)
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for m, e in enumerate(explanations):
        for task, values in e.attributions.items():
            e.files += draw_attributions(e.mol, values, folder / f"mol{m}_{_slug(task)}", size=size)
    _write_csv(explanations, folder / "attributions.csv")
    payload = {"method": METHOD, "molecules": [e.to_dict() for e in explanations]}
    (folder / "explanations.json").write_text(json.dumps(payload, indent=2) + "\n")
    return explanations


__all__ = ["METHOD", "MoleculeExplanation", "atom_attributions", "draw_attributions", "explain", "task_names"]
