# Copyright 2025 The mmsa_hf Authors. Licensed under the MIT licence.
"""Processor for MMSA: molecules -> the batch of `docs/batch-format.md` (graph, 3D conformer and image views).

The processor computes only the views it is asked for (`views`, a setting saved in `processor_config.json`, which a
call can narrow further): a graph-only processor does no conformer embedding and no drawing.
"""

from __future__ import annotations

import inspect
import multiprocessing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from rdkit import Chem, rdBase
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .feature_extraction_mmsa import MMSAFeatureExtractor, MoleculeError, describe_molecule
from .image_processing_mmsa import MMSAImageProcessor


logger = logging.get_logger(__name__)

ON_ERROR_POLICIES = ("raise", "skip", "mask")
#: every view, in the model's modality order; "graph" is always computed (every batch carries the molecular graph)
VIEWS = ("graph", "image", "geometry")
#: the record / batch keys each optional view adds (`docs/batch-format.md`)
VIEW_RECORD_KEYS = {"image": ("image_png",), "geometry": ("pos", "conformer_status")}
VIEW_BATCH_KEYS = {"image": ("pixel_values",), "geometry": ("pos", "conformer_status")}
PROGRESS_BAR_MIN_MOLECULES = 256  # a progress bar is shown for longer inputs (when `show_progress`)

_WORKER_PROCESSOR: MMSAProcessor | None = None


def _init_worker(processor: MMSAProcessor) -> None:
    global _WORKER_PROCESSOR
    _WORKER_PROCESSOR = processor


def _worker_featurize(
    job: tuple[list[tuple[int, Any]], tuple[str, ...]],
) -> list[tuple[int, dict[str, Any] | None, str | None]]:
    chunk, views = job
    return _WORKER_PROCESSOR._featurize_chunk(chunk, views)


def normalize_views(views: Any, name: str = "views") -> tuple[str, ...]:
    """`views` (a name or an iterable of names; `None` = all) -> a tuple in `VIEWS` order; raises naming a bad one."""
    if views is None:
        return VIEWS
    requested = [views] if isinstance(views, str) else list(views)
    unknown = [v for v in requested if v not in VIEWS]
    if unknown:
        raise ValueError(f"{name}: unknown view(s) {unknown}; known views: {list(VIEWS)}")
    if "graph" not in requested:
        raise ValueError(f"{name}={requested} must include 'graph' (every batch carries the molecular graph)")
    return tuple(v for v in VIEWS if v in requested)


class MMSAProcessor(ProcessorMixin):
    r"""
    Builds the MMSA multi-modal batch from SMILES strings or RDKit Mols: the 2D graph and 3D conformer views from
    [`MMSAFeatureExtractor`] and the depiction from [`MMSAImageProcessor`], for the same atoms in the same order.

    `processor(inputs)` is exactly `processor.collate(processor.featurize(inputs))`: `featurize` returns one
    Arrow-storable record per molecule (what a `datasets` cache stores) and `collate` builds the tensors.

    Args:
        feature_extractor (`MMSAFeatureExtractor`, *optional*): graph and conformer featurizer (default settings
            when omitted).
        image_processor (`MMSAImageProcessor`, *optional*): depiction settings (default settings when omitted).
        on_error (`str`, *optional*, defaults to `"raise"`):
            What to do with an invalid molecule: `"raise"` a `ValueError` naming its index and SMILES, `"skip"` it
            (`input_indices` tells which inputs were kept) or `"mask"` it (a placeholder row, `valid_mask=False`).
        num_proc (`int`, *optional*, defaults to 1):
            Worker processes for featurization (fork where available). Results do not depend on it.
        show_progress (`bool`, *optional*, defaults to `True`):
            Show a tqdm progress bar for inputs longer than 256 molecules.
        views (`tuple[str, ...]`, *optional*, defaults to all of `("graph", "image", "geometry")`):
            The views computed: `("graph",)` skips the conformer (`pos`, `conformer_status`) and the depiction
            (`pixel_values`). Saved in `processor_config.json` only when it is not the full set, so the full
            processor's config (and feature-cache fingerprint) is unchanged. `featurize` / `collate` / `__call__`
            take `views=` to narrow it further for one call; [`~MMSAProcessor.with_views`] returns a copy with
            other views.
    """

    def __init__(
        self,
        feature_extractor: MMSAFeatureExtractor | None = None,
        image_processor: MMSAImageProcessor | None = None,
        on_error: str = "raise",
        num_proc: int | None = 1,
        show_progress: bool = True,
        views: Any = None,
    ):
        if feature_extractor is None:
            feature_extractor = MMSAFeatureExtractor()
        if image_processor is None:
            image_processor = MMSAImageProcessor()
        super().__init__(feature_extractor=feature_extractor, image_processor=image_processor)
        self.on_error = self._check_on_error(on_error)
        self.num_proc = max(1, int(num_proc or 1))
        self.show_progress = bool(show_progress)
        self.views = normalize_views(views)

    def to_dict(self) -> dict[str, Any]:
        """The saved settings; `views` only when it is not the full set (keeps full configs byte-identical)."""
        output = super().to_dict()
        if self.views == VIEWS:
            output.pop("views", None)
        else:
            output["views"] = list(self.views)
        return output

    def with_views(self, views: Any) -> MMSAProcessor:
        """A copy of this processor computing `views` (narrower or wider; every other setting kept)."""
        return type(self)(
            feature_extractor=self.feature_extractor,
            image_processor=self.image_processor,
            on_error=self.on_error,
            num_proc=self.num_proc,
            show_progress=self.show_progress,
            views=views,
        )

    def resolve_views(self, views: Any = None) -> tuple[str, ...]:
        """The views of one call: this processor's `views`, or a subset of them; raises naming a view it lacks."""
        if views is None or views is self.views:
            return self.views
        views = normalize_views(views)
        missing = [v for v in views if v not in self.views]
        if missing:
            raise ValueError(
                f"views {list(views)}: this processor computes only {list(self.views)}, not {missing}; "
                f"use processor.with_views({list(views)}) for a processor that computes them"
            )
        return views

    # `ProcessorMixin` would look the sub-processors up through the Auto classes, which needs a registered config
    # (absent when this file runs as Hub remote code without `mmsa_hf`); build them directly from the nested
    # `processor_config.json` instead, falling back to the default lookup for a flat (legacy) config.
    @staticmethod
    def _subprocessors_from_dict(processor_dict: dict[str, Any] | None) -> dict[str, Any] | None:
        """`{"feature_extractor": ..., "image_processor": ...}` built from a nested processor config, else None."""
        processor_dict = processor_dict or {}
        feature_extractor_dict = processor_dict.get("feature_extractor")
        image_processor_dict = processor_dict.get("image_processor")
        if not (isinstance(feature_extractor_dict, dict) and isinstance(image_processor_dict, dict)):
            return None
        return {
            "feature_extractor": MMSAFeatureExtractor.from_dict(dict(feature_extractor_dict)),
            "image_processor": MMSAImageProcessor.from_dict(dict(image_processor_dict)),
        }

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        """`processor_dict` with its sub-processors built (ones passed as kwargs win), and the kwargs `from_dict`
        may use (hub arguments such as `cache_dir` or `revision` are dropped). transformers >= 5.25 calls this."""
        built = cls._subprocessors_from_dict(processor_dict)
        if built is None:
            return super()._resolve_subprocessors(pretrained_model_name_or_path, processor_dict, **kwargs)
        for name in built:
            if kwargs.get(name) is not None:
                built[name] = kwargs.pop(name)
        init_parameters = inspect.signature(cls.__init__).parameters
        return {**processor_dict, **built}, {k: v for k, v in kwargs.items() if k in init_parameters}

    @property
    def model_input_names(self) -> list[str]:
        """The tensor keys of this processor's batches (the geometry / image keys only with those views)."""
        skipped = {key for view, keys in VIEW_BATCH_KEYS.items() if view not in self.views for key in keys}
        names = [*self.feature_extractor.model_input_names, *self.image_processor.model_input_names]
        return [name for name in names if name not in skipped] + ["valid_mask", "input_indices"]

    @staticmethod
    def _check_on_error(on_error: str) -> str:
        if on_error not in ON_ERROR_POLICIES:
            raise ValueError(f"on_error must be one of {ON_ERROR_POLICIES}, got {on_error!r}")
        return on_error

    # ------------------------------------------------------------------ one molecule
    def featurize_one(self, molecule: Any, input_index: int = 0, views: Any = None) -> dict[str, Any]:
        """The record of one molecule for `views` (default: this processor's); raises `MoleculeError` (a
        `ValueError`) for an invalid one. Graph-only records have no `pos` / `conformer_status` / `image_png`."""
        views = self.resolve_views(views)
        with rdBase.BlockLogs():
            mol = self.feature_extractor.prepare_molecule(molecule)
            record = self.feature_extractor.graph_features(mol)
            if "geometry" in views:
                pos, status = self.feature_extractor.conformer(mol)
                record.update(pos=pos, conformer_status=int(status))
            if "image" in views:
                record["image_png"] = self.image_processor.depict(mol)
            record.update(smiles=Chem.MolToSmiles(mol), valid=True, input_index=int(input_index))
            return record

    def placeholder_record(self, input_index: int, views: Any = None) -> dict[str, Any]:
        """The `mask`-policy placeholder record for `views` (see `docs/batch-format.md`)."""
        views = self.resolve_views(views)
        record = self.feature_extractor.placeholder_record()
        if "geometry" not in views:
            del record["pos"], record["conformer_status"]
        if "image" in views:
            record["image_png"] = self.image_processor.placeholder_png()
        record.update(smiles="", valid=False, input_index=int(input_index))
        return record

    def atom_pixel_coords(self, molecule: Any) -> np.ndarray:
        """Pixel `(x, y)` `[n, 2]` of each graph atom in this processor's depiction of `molecule`."""
        with rdBase.BlockLogs():
            return self.image_processor.atom_pixel_coords(self.feature_extractor.prepare_molecule(molecule))

    def _featurize_chunk(
        self, chunk: list[tuple[int, Any]], views: tuple[str, ...] | None = None
    ) -> list[tuple[int, dict[str, Any] | None, str | None]]:
        results = []
        for index, molecule in chunk:
            try:
                results.append((index, self.featurize_one(molecule, index, views=views), None))
            except MoleculeError as err:
                results.append((index, None, str(err)))
            except Exception as err:  # noqa: BLE001 - any RDKit failure on one molecule is that molecule's error
                results.append((index, None, f"{type(err).__name__}: {err}"))
        return results

    def _iter_results(
        self, molecules: list[Any], num_proc: int, views: tuple[str, ...]
    ) -> Iterator[tuple[int, dict | None, str | None]]:
        indexed = list(enumerate(molecules))
        if num_proc > 1 and multiprocessing.current_process().daemon:
            # e.g. inside a `datasets.map(num_proc=...)` worker: daemonic processes cannot have children
            logger.warning_once("MMSAProcessor: num_proc > 1 ignored inside a daemonic worker process.")
            num_proc = 1
        if num_proc <= 1 or len(indexed) < 2:
            for item in indexed:
                yield from self._featurize_chunk([item], views)
            return
        chunk_size = max(1, min(32, len(indexed) // (4 * num_proc)))
        chunks = [indexed[i : i + chunk_size] for i in range(0, len(indexed), chunk_size)]
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with context.Pool(min(num_proc, len(chunks)), initializer=_init_worker, initargs=(self,)) as pool:
            jobs = ((chunk, views) for chunk in chunks)
            for results in pool.imap(_worker_featurize, jobs):  # ordered: results follow the input order
                yield from results

    # ------------------------------------------------------------------ public API
    def featurize(
        self,
        inputs: Any,
        on_error: str | None = None,
        num_proc: int | None = None,
        show_progress: bool | None = None,
        views: Any = None,
    ) -> list[dict[str, Any]]:
        """
        One record per kept molecule: plain numpy / Python values that Arrow can store (`docs/batch-format.md`).

        Args:
            inputs: a SMILES string, an RDKit `Mol`, or a sequence of them (mixed is fine).
            on_error: overrides the processor's `on_error` for this call.
            num_proc: overrides the processor's `num_proc` for this call.
            show_progress: overrides the processor's `show_progress` for this call.
            views: a subset of the processor's `views` for this call (e.g. `("graph",)`).

        Under `skip`, an input with no valid molecule returns `[]` (so that a `datasets.map` batch may be empty);
        `__call__` turns that into a `ValueError`.
        """
        on_error = self._check_on_error(self.on_error if on_error is None else on_error)
        num_proc = max(1, int((self.num_proc if num_proc is None else num_proc) or 1))
        show_progress = self.show_progress if show_progress is None else show_progress
        views = self.resolve_views(views)
        molecules = self._as_list(inputs)

        progress = None
        if show_progress and len(molecules) > PROGRESS_BAR_MIN_MOLECULES:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(molecules), desc="Featurizing molecules", unit="mol")
        records, errors = [], []
        results = self._iter_results(molecules, num_proc, views)
        try:
            for index, record, error in results:
                if progress is not None:
                    progress.update(1)
                if error is None:
                    records.append(record)
                    continue
                if on_error == "raise":
                    raise ValueError(
                        f"Invalid molecule at index {index} {describe_molecule(molecules[index])}: {error}. "
                        "Pass on_error='skip' or on_error='mask' to continue past invalid molecules."
                    )
                errors.append(f"index {index} {describe_molecule(molecules[index])}: {error}")
                if on_error == "mask":
                    records.append(self.placeholder_record(index, views))
        finally:
            results.close()  # stops the worker pool at once when raising
            if progress is not None:
                progress.close()
        if errors:
            action = "skipped" if on_error == "skip" else "masked"
            shown = "; ".join(errors[:5]) + ("; ..." if len(errors) > 5 else "")
            logger.warning(f"{action} {len(errors)} of {len(molecules)} invalid molecules: {shown}")
        return records

    def collate(
        self, records: Sequence[dict[str, Any]], return_tensors: str | None = "pt", views: Any = None
    ) -> BatchFeature:
        """Records (from `featurize` or a `datasets` cache) -> the `BatchFeature` of `docs/batch-format.md`.

        Builds the keys of `views` (default: this processor's) only: a graph-only batch has no `pos`,
        `conformer_status` or `pixel_values` (never zeros). Records may hold more views than asked for; a record
        lacking a requested view raises a `ValueError` naming the view and the record.
        """
        if len(records) == 0:
            raise ValueError("cannot collate an empty list of records")
        views = self.resolve_views(views)
        self._check_records_have(records, views)
        data = self.feature_extractor.collate(records, geometry="geometry" in views)
        if "image" in views:
            data["pixel_values"] = self.image_processor.collate([r["image_png"] for r in records])
        data["valid_mask"] = np.asarray([bool(r["valid"]) for r in records], dtype=bool)
        data["input_indices"] = np.asarray([int(r["input_index"]) for r in records], dtype=np.int64)
        data["smiles"] = [str(r["smiles"]) for r in records]
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=["smiles"])

    @staticmethod
    def _check_records_have(records: Sequence[dict[str, Any]], views: tuple[str, ...]) -> None:
        for view in views:
            for key in VIEW_RECORD_KEYS.get(view, ()):
                lacking = next((b for b, r in enumerate(records) if key not in r), None)
                if lacking is not None:
                    raise ValueError(
                        f"record {lacking} has no {key!r}, so the {view!r} view cannot be collated: it was "
                        f"featurized without that view; collate with views excluding {view!r} or featurize "
                        f"with a processor whose views include it"
                    )

    def __call__(
        self,
        inputs: Any,
        on_error: str | None = None,
        num_proc: int | None = None,
        return_tensors: str | None = "pt",
        show_progress: bool | None = None,
        views: Any = None,
    ) -> BatchFeature:
        """
        Featurize `inputs` (a SMILES string, an RDKit `Mol`, or a sequence of them) into one batch.
        Equivalent to `self.collate(self.featurize(inputs, on_error, num_proc, views=views), return_tensors,
        views=views)`.
        """
        records = self.featurize(
            inputs, on_error=on_error, num_proc=num_proc, show_progress=show_progress, views=views
        )
        if not records:
            raise ValueError(
                f"no valid molecules among the {len(self._as_list(inputs))} inputs (on_error='skip'); "
                "see the warning above for the reasons"
            )
        return self.collate(records, return_tensors=return_tensors, views=views)

    @staticmethod
    def _as_list(inputs: Any) -> list[Any]:
        if inputs is None or isinstance(inputs, (str, Chem.Mol)):
            return [inputs]
        if isinstance(inputs, Iterable):
            return list(inputs)
        return [inputs]


__all__ = ["VIEWS", "MMSAProcessor", "normalize_views"]
