# Copyright 2025 The mmsa_hf Authors. Licensed under the MIT licence.
"""Feature extractor for MMSA: the 2D molecular graph and the 3D conformer views.

The feature extractor turns a molecule (SMILES string or RDKit `Mol`) into:

* OGB-style categorical atom features (9 columns) and bond features (3 columns), with the edge list in both
  directions;
* a 3D conformer for the same atoms, in the same order (ETKDGv3 with a fixed seed, then MMFF), with a
  per-molecule time limit and a fallback ladder `etkdg -> etkdg_random_coords -> 2d_fallback`.

Atoms are the atoms of RDKit's hydrogen-suppressed molecule ("heavy atoms"), in RDKit order. Hydrogens that RDKit
keeps as graph atoms after `MolFromSmiles`/`RemoveHs` (isotopic `[2H]`, `[H][H]`, a lone `[H+]`) stay atoms with
atomic number 1, exactly as in OGB's `smiles2graph`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdDepictor, rdDistGeom, rdForceFieldHelpers
from rdkit.Chem.MolStandardize import rdMolStandardize
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin
from transformers.utils import logging


logger = logging.get_logger(__name__)

# Every column's last index means "other/unknown" (see docs/batch-format.md).
ATOM_FEATURE_VOCAB_SIZES = [119, 5, 12, 12, 10, 6, 6, 3, 3]
BOND_FEATURE_VOCAB_SIZES = [5, 7, 3]
#: Appended codes keep the earlier ones: 5 and 6 are ETKDG coordinates whose force-field optimisation could not run
#: (no parameters for an atom type, a setup error, or non-finite output), kept as embedded.
CONFORMER_STATUSES = ("etkdg", "etkdg_random_coords", "2d_fallback", "provided", "invalid",
                      "etkdg_unoptimized", "etkdg_random_coords_unoptimized")

STATUS_ETKDG = CONFORMER_STATUSES.index("etkdg")
STATUS_ETKDG_RANDOM_COORDS = CONFORMER_STATUSES.index("etkdg_random_coords")
STATUS_2D_FALLBACK = CONFORMER_STATUSES.index("2d_fallback")
STATUS_PROVIDED = CONFORMER_STATUSES.index("provided")
STATUS_INVALID = CONFORMER_STATUSES.index("invalid")
#: the status of an embedding whose force-field step failed, by the status of the embedding
UNOPTIMIZED_STATUS = {STATUS_ETKDG: CONFORMER_STATUSES.index("etkdg_unoptimized"),
                      STATUS_ETKDG_RANDOM_COORDS: CONFORMER_STATUSES.index("etkdg_random_coords_unoptimized")}



def conformer_status_names(status) -> list[str]:
    """The names of ``conformer_status`` codes (a batch's long tensor, an array or a list of ints), e.g.
    ``["etkdg", "invalid"]`` for ``tensor([0, 4])``; an unknown code raises a ``ValueError`` naming it."""
    codes = status.tolist() if hasattr(status, "tolist") else list(status)
    unknown = [code for code in codes if not 0 <= int(code) < len(CONFORMER_STATUSES)]
    if unknown:
        raise ValueError(f"conformer_status: unknown code(s) {unknown}; known: {dict(enumerate(CONFORMER_STATUSES))}")
    return [CONFORMER_STATUSES[int(code)] for code in codes]


FRAGMENT_POLICIES = ("all", "largest")
FORCE_FIELDS = ("mmff", "uff", "none")

_CHIRALITY = {
    Chem.ChiralType.CHI_UNSPECIFIED: 0,
    Chem.ChiralType.CHI_TETRAHEDRAL_CW: 1,
    Chem.ChiralType.CHI_TETRAHEDRAL_CCW: 2,
    Chem.ChiralType.CHI_OTHER: 3,
}
_HYBRIDIZATION = {
    Chem.HybridizationType.SP: 0,
    Chem.HybridizationType.SP2: 1,
    Chem.HybridizationType.SP3: 2,
    Chem.HybridizationType.SP3D: 3,
    Chem.HybridizationType.SP3D2: 4,
}
_BOND_TYPE = {
    Chem.BondType.SINGLE: 0,
    Chem.BondType.DOUBLE: 1,
    Chem.BondType.TRIPLE: 2,
    Chem.BondType.AROMATIC: 3,
}
_BOND_STEREO = {
    Chem.BondStereo.STEREONONE: 0,
    Chem.BondStereo.STEREOZ: 1,
    Chem.BondStereo.STEREOE: 2,
    Chem.BondStereo.STEREOCIS: 3,
    Chem.BondStereo.STEREOTRANS: 4,
    Chem.BondStereo.STEREOANY: 5,
}

# The "unknown" index of every column: the placeholder atom of an invalid row.
UNKNOWN_ATOM_FEATURES = [size - 1 for size in ATOM_FEATURE_VOCAB_SIZES]

_LARGEST_FRAGMENT_CHOOSER = None


class MoleculeError(ValueError):
    """A molecule that cannot be featurized (unparsable, fails sanitization, too large, ...)."""


def _largest_fragment(mol: Chem.Mol) -> Chem.Mol:
    global _LARGEST_FRAGMENT_CHOOSER
    if _LARGEST_FRAGMENT_CHOOSER is None:
        _LARGEST_FRAGMENT_CHOOSER = rdMolStandardize.LargestFragmentChooser()
    return _LARGEST_FRAGMENT_CHOOSER.choose(mol)


def describe_molecule(molecule: Any) -> str:
    """A short, printable description of an input, for error messages."""
    if isinstance(molecule, Chem.Mol):
        try:
            return f"<rdkit Mol {Chem.MolToSmiles(molecule)!r}>"
        except Exception:  # noqa: BLE001 - an unsanitizable Mol can fail to write
            return "<rdkit Mol>"
    text = repr(molecule)
    if isinstance(molecule, str) or len(text) <= 200:  # a SMILES is always given in full
        return text
    return text[:197] + "..."


def smiles_error_reason(smiles: str) -> str:
    """Why RDKit rejects a SMILES string (called only after `MolFromSmiles` returned None)."""
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return "unparsable SMILES"
    try:
        Chem.SanitizeMol(mol)
    except Exception as err:  # noqa: BLE001 - RDKit raises several sanitization exception types
        return f"RDKit sanitization failed: {err}"
    return "RDKit could not read this SMILES"


def compute_2d_coords(mol: Chem.Mol) -> Chem.Mol:
    """A copy of `mol` whose only conformer holds RDKit's deterministic 2D depiction coordinates (z = 0)."""
    mol = Chem.Mol(mol)
    mol.RemoveAllConformers()
    prefer_coordgen = rdDepictor.GetPreferCoordGen()
    rdDepictor.SetPreferCoordGen(False)
    try:
        rdDepictor.Compute2DCoords(mol)
    finally:
        rdDepictor.SetPreferCoordGen(prefer_coordgen)
    return mol


def parse_molecule(molecule: Any) -> Chem.Mol:
    """SMILES string or RDKit `Mol` -> sanitized, hydrogen-suppressed `Mol` (a copy); raises `MoleculeError`."""
    if isinstance(molecule, Chem.Mol):
        try:
            mol = Chem.RemoveHs(molecule)  # copies and sanitizes; keeps the coordinates of the remaining atoms
        except Exception as err:  # noqa: BLE001
            raise MoleculeError(f"RDKit sanitization failed: {err}") from None
    elif isinstance(molecule, str):
        if not molecule.strip():
            raise MoleculeError("empty SMILES")
        mol = Chem.MolFromSmiles(molecule)
        if mol is None:
            raise MoleculeError(smiles_error_reason(molecule))
    elif molecule is None:
        raise MoleculeError("missing molecule (None)")
    else:
        raise MoleculeError(f"expected a SMILES string or an rdkit Mol, got {type(molecule).__name__}")
    if mol.GetNumAtoms() == 0:
        raise MoleculeError("molecule has no atoms")
    return mol


def atom_features(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray]:
    """OGB-style categorical atom features int64 `[n, 9]` and atomic numbers int64 `[n]`."""
    rows, atomic_numbers = [], []
    chirality, hybridization = _CHIRALITY.get, _HYBRIDIZATION.get
    atom_at = mol.GetAtomWithIdx  # ~15% faster than RDKit's Python-level `GetAtoms()` sequence wrapper
    for index in range(mol.GetNumAtoms()):
        atom = atom_at(index)
        z = atom.GetAtomicNum()
        degree = atom.GetTotalDegree()
        charge = atom.GetFormalCharge() + 5
        num_hs = atom.GetTotalNumHs()
        radicals = atom.GetNumRadicalElectrons()
        atomic_numbers.append(z)
        rows.append(
            (
                z - 1 if 1 <= z <= 118 else 118,
                chirality(atom.GetChiralTag(), 4),
                degree if degree <= 10 else 11,
                charge if 0 <= charge <= 10 else 11,
                num_hs if num_hs <= 8 else 9,
                radicals if radicals <= 4 else 5,
                hybridization(atom.GetHybridization(), 5),
                int(atom.GetIsAromatic()),
                int(atom.IsInRing()),
            )
        )
    return np.asarray(rows, dtype=np.int64).reshape(-1, 9), np.asarray(atomic_numbers, dtype=np.int64)


def bond_features(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray]:
    """Bond features int64 `[e, 3]` and local edge index int64 `[2, e]`, each bond in both directions."""
    edges, feats = [], []
    bond_type, bond_stereo = _BOND_TYPE.get, _BOND_STEREO.get
    bond_at = mol.GetBondWithIdx
    for index in range(mol.GetNumBonds()):
        bond = bond_at(index)
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feat = (bond_type(bond.GetBondType(), 4), bond_stereo(bond.GetStereo(), 6), int(bond.GetIsConjugated()))
        edges += ((i, j), (j, i))
        feats += (feat, feat)
    edge_index = np.asarray(edges, dtype=np.int64).reshape(-1, 2).T.copy()
    return np.asarray(feats, dtype=np.int64).reshape(-1, 3), edge_index


MIN_ATOM_DISTANCE = 0.25  # Angstrom; closer atoms mean a collapsed or overlapping conformer
FRAGMENT_GAP = 2.0  # Angstrom between the enclosing spheres of separately embedded fragments


def _usable(pos: np.ndarray) -> bool:
    """Finite coordinates with no two atoms closer than `MIN_ATOM_DISTANCE` (never all-zero for >= 2 atoms)."""
    if not np.isfinite(pos).all():
        return False
    if len(pos) < 2:
        return True
    diff = pos[:, None, :] - pos[None, :, :]
    dist2 = np.einsum("ijk,ijk->ij", diff, diff)
    np.fill_diagonal(dist2, np.inf)
    return float(dist2.min()) > MIN_ATOM_DISTANCE**2


def _separate_fragments(mol: Chem.Mol, conf_id: int) -> None:
    """Lay separately embedded fragments (all centred at the origin by ETKDG) side by side along x, in place."""
    fragments = Chem.GetMolFrags(mol)
    if len(fragments) < 2:
        return
    conf = mol.GetConformer(conf_id)
    pos = conf.GetPositions()
    x, previous_radius = 0.0, 0.0
    for k, atoms in enumerate(fragments):
        atoms = list(atoms)
        centre = pos[atoms].mean(axis=0)
        radius = float(np.sqrt(((pos[atoms] - centre) ** 2).sum(axis=1).max()))
        if k > 0:
            x += previous_radius + radius + FRAGMENT_GAP
        pos[atoms] += np.asarray([x, 0.0, 0.0]) - centre
        previous_radius = radius
    for i, xyz in enumerate(pos):
        conf.SetAtomPosition(i, xyz.tolist())


class MMSAFeatureExtractor(FeatureExtractionMixin):
    r"""
    Featurizes molecules into the MMSA 2D-graph and 3D-conformer views.

    Args:
        conformer_seed (`int`, *optional*, defaults to 0):
            `randomSeed` of ETKDGv3, so that conformers are reproducible (RDKit's generator treats 0 and 1 alike).
        conformer_timeout (`float`, *optional*, defaults to 10.0):
            Time budget in seconds for the conformer embedding of one molecule. RDKit stops an embedding natively
            after `ceil(remaining budget)` whole seconds (its `timeout` parameter has 1 s resolution); an embedding
            that finishes after the budget is discarded and no later rung is started, so the molecule falls back to
            2D coordinates. Force-field optimisation (bounded by `conformer_max_iters`) is not counted.
        conformer_force_field (`str`, *optional*, defaults to `"mmff"`):
            `"mmff"` (MMFF94, UFF when MMFF has no parameters, nothing when neither has), `"uff"`, or `"none"`.
            The status stays `etkdg`/`etkdg_random_coords` whichever force field was used.
        conformer_max_iters (`int`, *optional*, defaults to 200):
            Maximum force-field minimisation iterations.
        use_provided_conformers (`bool`, *optional*, defaults to `True`):
            Use the conformer of an input `Mol` as is (status `provided`) instead of computing one.
        max_atoms (`int`, *optional*, defaults to 512):
            Molecules with more atoms (after fragment selection) are invalid; they are never truncated.
        fragments (`str`, *optional*, defaults to `"all"`):
            `"all"` keeps every fragment of a salt/mixture, `"largest"` keeps RDKit's `LargestFragmentChooser` pick.

    Conformers are embedded with hydrogens (`AddHs`) and reported for the heavy atoms (the first `n` atoms, i.e.
    `RemoveHs` keeping coordinates). ETKDG embeds the fragments of a salt separately, all centred at the origin; they
    are laid side by side along x, `FRAGMENT_GAP` = 2 Angstrom apart, before optimisation. A rung whose coordinates
    are non-finite or put two atoms closer than 0.25 Angstrom counts as failed, so a molecule with >= 2 atoms never
    gets all-zero positions; a 1-atom molecule sits at (0, 0, 0), its only sensible position.
    """

    model_input_names = [
        "atom_features",
        "bond_features",
        "edge_index",
        "batch",
        "ptr",
        "atomic_numbers",
        "pos",
        "conformer_status",
    ]

    def __init__(
        self,
        conformer_seed: int = 0,
        conformer_timeout: float = 10.0,
        conformer_force_field: str = "mmff",
        conformer_max_iters: int = 200,
        use_provided_conformers: bool = True,
        max_atoms: int = 512,
        fragments: str = "all",
        **kwargs,
    ):
        kwargs.pop("feature_extractor_type", None)
        super().__init__(**kwargs)
        if fragments not in FRAGMENT_POLICIES:
            raise ValueError(f"fragments must be one of {FRAGMENT_POLICIES}, got {fragments!r}")
        if conformer_force_field not in FORCE_FIELDS:
            raise ValueError(f"conformer_force_field must be one of {FORCE_FIELDS}, got {conformer_force_field!r}")
        if not conformer_timeout > 0:
            raise ValueError(f"conformer_timeout must be > 0 seconds, got {conformer_timeout!r}")
        if int(max_atoms) < 1:
            raise ValueError(f"max_atoms must be >= 1, got {max_atoms!r}")
        self.conformer_seed = int(conformer_seed)
        self.conformer_timeout = float(conformer_timeout)
        self.conformer_force_field = conformer_force_field
        self.conformer_max_iters = int(conformer_max_iters)
        self.use_provided_conformers = bool(use_provided_conformers)
        self.max_atoms = int(max_atoms)
        self.fragments = fragments

    # ------------------------------------------------------------------ molecules
    def prepare_molecule(self, molecule: Any) -> Chem.Mol:
        """Parse, sanitize, remove hydrogens, select fragments and check the size; raises `MoleculeError`."""
        mol = parse_molecule(molecule)
        if self.fragments == "largest" and len(Chem.GetMolFrags(mol)) > 1:
            mol = _largest_fragment(mol)
        if mol.GetNumAtoms() > self.max_atoms:
            raise MoleculeError(f"{mol.GetNumAtoms()} atoms exceeds max_atoms={self.max_atoms}")
        return mol

    def graph_features(self, mol: Chem.Mol) -> dict[str, np.ndarray]:
        """`atom_features [n, 9]`, `bond_features [e, 3]`, `edge_index [2, e]` (local) and `atomic_numbers [n]`."""
        atom_feats, atomic_numbers = atom_features(mol)
        bond_feats, edge_index = bond_features(mol)
        return {
            "atom_features": atom_feats,
            "bond_features": bond_feats,
            "edge_index": edge_index,
            "atomic_numbers": atomic_numbers,
        }

    def conformer(self, mol: Chem.Mol) -> tuple[np.ndarray, int]:
        """3D positions float32 `[n, 3]` for the atoms of `mol` (same order) and the conformer status index."""
        n = mol.GetNumAtoms()
        if self.use_provided_conformers and mol.GetNumConformers() > 0:
            pos = mol.GetConformer().GetPositions()
            if _usable(pos):
                return pos.astype(np.float32), STATUS_PROVIDED
            logger.warning("Ignoring a provided conformer with non-finite or overlapping atom coordinates.")
        deadline = time.perf_counter() + self.conformer_timeout
        mol_h = Chem.AddHs(mol)  # hydrogens are appended: atoms 0..n-1 stay the heavy atoms, in order
        for status, random_coords in ((STATUS_ETKDG, False), (STATUS_ETKDG_RANDOM_COORDS, True)):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            params = rdDistGeom.ETKDGv3()
            params.randomSeed = self.conformer_seed
            params.useRandomCoords = random_coords
            params.numThreads = 1
            params.timeout = max(1, math.ceil(remaining))
            mol_h.RemoveAllConformers()
            conf_id = rdDistGeom.EmbedMolecule(mol_h, params)
            if conf_id < 0 or time.perf_counter() > deadline:
                continue
            _separate_fragments(mol_h, conf_id)
            if not self._optimize(mol_h, conf_id):
                status = UNOPTIMIZED_STATUS[status]
            # Equivalent to RemoveHs keeping coordinates: the first n atoms of mol_h are the atoms of mol.
            pos = mol_h.GetConformer(conf_id).GetPositions()[:n]
            if _usable(pos):
                return pos.astype(np.float32), status
        pos = compute_2d_coords(mol).GetConformer().GetPositions()
        pos[:, 2] = 0.0
        return pos.astype(np.float32), STATUS_2D_FALLBACK

    def _optimize(self, mol_h: Chem.Mol, conf_id: int) -> bool:
        """Force-field minimisation in place. Returns False (keeping the embedded coordinates) when the force field
        has no parameters for the molecule, fails to set up, or produces non-finite coordinates; True when it ran
        or ``conformer_force_field="none"`` asked for none."""
        if self.conformer_force_field == "none":
            return True
        before = mol_h.GetConformer(conf_id).GetPositions()
        try:
            ran = self._run_force_field(mol_h, conf_id)
        except Exception as err:  # noqa: BLE001 - RDKit raises several setup error types; the status records it
            logger.debug("Force-field optimisation failed (%s); keeping the ETKDG coordinates.", err)
            ran = False
        conf = mol_h.GetConformer(conf_id)
        if not np.isfinite(conf.GetPositions()).all():
            for i, xyz in enumerate(before):
                conf.SetAtomPosition(i, xyz.tolist())
            return False
        return ran

    def _run_force_field(self, mol_h: Chem.Mol, conf_id: int) -> bool:
        """MMFF94 (or UFF, the fallback and the ``"uff"`` choice) minimisation; False when neither has parameters."""
        props = None
        if self.conformer_force_field == "mmff":
            props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol_h)
        if props is not None:
            field = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol_h, props, confId=conf_id)
            field.Minimize(maxIts=self.conformer_max_iters)
            return True
        if rdForceFieldHelpers.UFFHasAllMoleculeParams(mol_h):
            rdForceFieldHelpers.UFFOptimizeMolecule(mol_h, maxIters=self.conformer_max_iters, confId=conf_id)
            return True
        return False

    def featurize_molecule(self, mol: Chem.Mol) -> dict[str, Any]:
        """Graph + 3D part of a record for a prepared molecule (see `prepare_molecule`)."""
        record = self.graph_features(mol)
        record["pos"], record["conformer_status"] = self.conformer(mol)
        return record

    @staticmethod
    def placeholder_record() -> dict[str, Any]:
        """Graph + 3D part of a `mask`-policy placeholder: one all-unknown atom at the origin, no bonds."""
        return {
            "atom_features": np.asarray([UNKNOWN_ATOM_FEATURES], dtype=np.int64),
            "bond_features": np.zeros((0, 3), dtype=np.int64),
            "edge_index": np.zeros((2, 0), dtype=np.int64),
            "atomic_numbers": np.zeros((1,), dtype=np.int64),
            "pos": np.zeros((1, 3), dtype=np.float32),
            "conformer_status": STATUS_INVALID,
        }

    # ------------------------------------------------------------------ batching
    @staticmethod
    def collate(records: Sequence[dict[str, Any]], geometry: bool = True) -> dict[str, np.ndarray]:
        """Concatenate per-molecule records into the batched graph arrays (global edge indices, batch, ptr) and,
        with `geometry`, the 3D arrays `pos [N, 3]` and `conformer_status [B]` (graph-only records need
        `geometry=False`)."""
        atom_feats = [np.asarray(r["atom_features"], dtype=np.int64).reshape(-1, 9) for r in records]
        counts = np.asarray([len(a) for a in atom_feats], dtype=np.int64)
        ptr = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        edge_index = [
            np.asarray(r["edge_index"], dtype=np.int64).reshape(2, -1) + ptr[b] for b, r in enumerate(records)
        ]
        atomic_numbers = [np.asarray(r["atomic_numbers"], dtype=np.int64).reshape(-1) for r in records]
        for b, (a, z) in enumerate(zip(atom_feats, atomic_numbers)):
            if len(a) != len(z):
                raise ValueError(f"record {b}: atom_features and atomic_numbers disagree on the number of atoms")
        data = {
            "atom_features": np.concatenate(atom_feats),
            "bond_features": np.concatenate(
                [np.asarray(r["bond_features"], dtype=np.int64).reshape(-1, 3) for r in records]
            ),
            "edge_index": np.concatenate(edge_index, axis=1),
            "batch": np.repeat(np.arange(len(records), dtype=np.int64), counts),
            "ptr": ptr,
            "atomic_numbers": np.concatenate(atomic_numbers),
        }
        if geometry:
            data.update(MMSAFeatureExtractor._collate_geometry(records, counts))
        return data

    @staticmethod
    def _collate_geometry(records: Sequence[dict[str, Any]], counts: np.ndarray) -> dict[str, np.ndarray]:
        """`pos` float32 `[N, 3]` and `conformer_status` long `[B]`; `counts [B]` are the atoms per record."""
        pos = [np.asarray(r["pos"], dtype=np.float32).reshape(-1, 3) for r in records]
        for b, (p, n) in enumerate(zip(pos, counts)):
            if len(p) != n:
                raise ValueError(f"record {b}: atom_features, atomic_numbers and pos disagree on the number of atoms")
        return {
            "pos": np.concatenate(pos),
            "conformer_status": np.asarray([int(r["conformer_status"]) for r in records], dtype=np.int64),
        }

    def __call__(self, molecules: Any, return_tensors: str | None = "pt") -> BatchFeature:
        """Graph + 3D views of one molecule or a list of molecules (raises on an invalid molecule)."""
        if isinstance(molecules, (str, Chem.Mol)) or molecules is None:
            molecules = [molecules]
        records = []
        for index, molecule in enumerate(molecules):
            try:
                records.append(self.featurize_molecule(self.prepare_molecule(molecule)))
            except MoleculeError as err:
                raise ValueError(f"Invalid molecule at index {index} {describe_molecule(molecule)}: {err}") from err
        if not records:
            raise ValueError("no molecules given")
        return BatchFeature(self.collate(records), tensor_type=return_tensors)


__all__ = [
    "ATOM_FEATURE_VOCAB_SIZES",
    "BOND_FEATURE_VOCAB_SIZES",
    "CONFORMER_STATUSES",
    "MMSAFeatureExtractor",
    "MoleculeError",
]
