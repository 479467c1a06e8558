"""Dataset splits: deterministic scaffold split (Hu et al. 2020), balanced scaffold split, random split.

All functions return plain Python data: a dict ``{"train": [...], "valid": [...], "test": [...],
"excluded": [...]}`` of 0-based row indices into the input list, each list sorted ascending.
``excluded`` holds the rows whose SMILES RDKit rejects (``Chem.MolFromSmiles`` returns ``None``);
they are in no split.

``scaffold_split`` is exactly the algorithm of ``shared/data/splits/README.md`` (``tiebreak=hu``):

1. ``mol = Chem.MolFromSmiles(smiles)`` (default sanitisation); ``None`` -> ``excluded``.
2. ``can = Chem.MolToSmiles(mol)``;
   ``scaffold = MurckoScaffold.MurckoScaffoldSmiles(smiles=can, includeChirality=True)``
   (acyclic molecules get ``""`` and form one group).
3. Group row indices by scaffold.
4. ``sorted(groups, key=lambda g: (len(g), g[0]), reverse=True)`` -- larger groups first, among
   equal sizes the group whose smallest row index is larger comes first.
5. ``N`` = valid rows, ``train_cut = frac[0] * N``, ``valid_cut = (frac[0] + frac[1]) * N``; every
   group is checked: ``len(train)+len(g) > train_cut`` -> (valid if it still fits under
   ``valid_cut`` else test), otherwise train.
"""

from __future__ import annotations

import json
import hashlib
import math
import random
from collections import defaultdict
from typing import Iterable, Sequence

SPLIT_KEYS = ("train", "valid", "test")

__all__ = [
    "canonicalize_and_scaffold",
    "canonicalize_smiles",
    "group_by_scaffold",
    "scaffold_split",
    "scaffold_split_from_scaffolds",
    "balanced_scaffold_split",
    "balanced_scaffold_split_from_scaffolds",
    "random_split",
    "scaffold_folds",
    "cross_validation_split",
    "split_sha256",
]


def _check_frac(frac: Sequence[float]) -> tuple[float, float, float]:
    if len(frac) != 3:
        raise ValueError(f"frac must have three entries (train, valid, test), got {frac!r}")
    f = tuple(float(x) for x in frac)
    if any(x < 0 for x in f) or not math.isclose(sum(f), 1.0, abs_tol=1e-6):
        raise ValueError(f"frac must be non-negative and sum to 1, got {frac!r}")
    return f  # type: ignore[return-value]


def canonicalize_smiles(smiles: Iterable[str | None]) -> list[str | None]:
    """RDKit canonical SMILES (``Chem.MolToSmiles(Chem.MolFromSmiles(s))``), ``None`` where RDKit rejects."""
    from rdkit import Chem, rdBase

    out: list[str | None] = []
    with rdBase.BlockLogs():
        for s in smiles:
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) else None
            out.append(Chem.MolToSmiles(mol) if mol is not None else None)
    return out


def canonicalize_and_scaffold(smiles: Iterable[str | None]) -> tuple[list[str | None], list[str | None]]:
    """Canonical SMILES and Bemis-Murcko scaffold (steps 1-2 of the algorithm); ``None`` where invalid."""
    from rdkit import Chem, rdBase
    from rdkit.Chem.Scaffolds import MurckoScaffold

    canon: list[str | None] = []
    scaf: list[str | None] = []
    with rdBase.BlockLogs():
        for s in smiles:
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) else None
            if mol is None:
                canon.append(None)
                scaf.append(None)
                continue
            can = Chem.MolToSmiles(mol)
            canon.append(can)
            scaf.append(MurckoScaffold.MurckoScaffoldSmiles(smiles=can, includeChirality=True))
    return canon, scaf


def group_by_scaffold(scaffolds: Sequence[str | None]) -> tuple[list[list[int]], list[int]]:
    """Scaffold groups (each sorted ascending, in order of first appearance) and the excluded rows
    (``None`` scaffolds)."""
    groups: dict[str, list[int]] = defaultdict(list)
    excluded: list[int] = []
    for i, s in enumerate(scaffolds):
        if s is None:
            excluded.append(i)
        else:
            groups[s].append(i)
    return list(groups.values()), excluded


def _result(train, valid, test, excluded) -> dict[str, list[int]]:
    return {
        "train": sorted(int(i) for i in train),
        "valid": sorted(int(i) for i in valid),
        "test": sorted(int(i) for i in test),
        "excluded": sorted(int(i) for i in excluded),
    }


def scaffold_split_from_scaffolds(
    scaffolds: Sequence[str | None], frac: Sequence[float] = (0.8, 0.1, 0.1)
) -> dict[str, list[int]]:
    """Steps 3-5 of the deterministic scaffold split, given per-row scaffolds (``None`` = excluded row)."""
    f = _check_frac(frac)
    groups, excluded = group_by_scaffold(scaffolds)
    n = len(scaffolds) - len(excluded)
    train_cut = f[0] * n
    valid_cut = (f[0] + f[1]) * n
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for g in sorted(groups, key=lambda g: (len(g), g[0]), reverse=True):
        if len(train) + len(g) > train_cut:
            if len(train) + len(valid) + len(g) > valid_cut:
                test.extend(g)
            else:
                valid.extend(g)
        else:
            train.extend(g)
    return _result(train, valid, test, excluded)


def scaffold_split(smiles: Sequence[str], frac: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, list[int]]:
    """Deterministic Bemis-Murcko scaffold split (Hu et al. 2020, ``tiebreak=hu``).

    Reproduces ``shared/data/splits/<name>_scaffold.json`` for the 11 MoleculeNet sets.
    Returns ``{"train", "valid", "test", "excluded"}`` -> sorted row indices.
    """
    _, scaffolds = canonicalize_and_scaffold(smiles)
    return scaffold_split_from_scaffolds(scaffolds, frac)


def balanced_scaffold_split_from_scaffolds(
    scaffolds: Sequence[str | None], frac: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[int]]:
    """Balanced scaffold split (chemprop / GraphMVP style) from per-row scaffolds.

    Groups larger than half the validation or half the test size ("big" groups) are placed first
    (in a seeded random order), then all other groups in a seeded random order. Each group goes to
    train if it fits under ``frac[0]*N``, else to valid if it fits under ``frac[1]*N``, else to test.
    Groups start in order of first appearance, so the result depends only on the data and ``seed``.
    """
    f = _check_frac(frac)
    groups, excluded = group_by_scaffold(scaffolds)
    n = len(scaffolds) - len(excluded)
    train_size, valid_size, test_size = f[0] * n, f[1] * n, f[2] * n
    big, small = [], []
    for g in groups:
        (big if (len(g) > valid_size / 2 or len(g) > test_size / 2) else small).append(g)
    rng = random.Random(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for g in big + small:
        if len(train) + len(g) <= train_size:
            train.extend(g)
        elif len(valid) + len(g) <= valid_size:
            valid.extend(g)
        else:
            test.extend(g)
    return _result(train, valid, test, excluded)


def balanced_scaffold_split(
    smiles: Sequence[str], frac: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[int]]:
    """Seeded balanced scaffold split; same scaffolds as :func:`scaffold_split`. See
    :func:`balanced_scaffold_split_from_scaffolds`."""
    _, scaffolds = canonicalize_and_scaffold(smiles)
    return balanced_scaffold_split_from_scaffolds(scaffolds, frac, seed)


def random_split(
    n: int, frac: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0, excluded: Iterable[int] = ()
) -> dict[str, list[int]]:
    """Seeded random split of ``range(n)`` minus ``excluded`` (``numpy.random.default_rng(seed)``
    permutation; the first ``int(frac[0]*N)`` rows go to train, the next ``int(frac[1]*N)`` to valid,
    the rest to test)."""
    import numpy as np

    f = _check_frac(frac)
    excluded = sorted({int(i) for i in excluded})
    bad = set(excluded)
    rows = np.array([i for i in range(int(n)) if i not in bad], dtype=np.int64)
    perm = rows[np.random.default_rng(seed).permutation(len(rows))]
    n_train = int(f[0] * len(rows))
    n_valid = int(f[1] * len(rows))
    return _result(perm[:n_train], perm[n_train : n_train + n_valid], perm[n_train + n_valid :], excluded)


def scaffold_folds(rows: Sequence[int], scaffolds: Sequence[str], k: int) -> list[list[int]]:
    """``k`` disjoint folds of ``rows`` such that no scaffold is in two folds (deterministic, no seed).

    Scaffold groups (:func:`group_by_scaffold`) are placed largest first (among equal sizes, the group that
    appears first in ``rows``), each into the fold that holds the fewest rows so far (ties: the lowest fold
    index). ``scaffolds[i]`` is the scaffold of ``rows[i]``; a ``None`` scaffold or a ``k`` above the number of
    scaffolds raises. Returns ``k`` sorted row lists.
    """
    if len(rows) != len(scaffolds):
        raise ValueError(f"scaffold_folds: {len(rows)} rows but {len(scaffolds)} scaffolds")
    groups, rejected = group_by_scaffold(scaffolds)  # positions in `rows`
    if rejected:
        raise ValueError(f"scaffold_folds: rows {[rows[i] for i in rejected]} have no scaffold (RDKit rejects them)")
    if k < 2 or k > len(groups):
        raise ValueError(f"scaffold_folds: k={k} must be between 2 and the number of scaffolds ({len(groups)})")
    folds: list[list[int]] = [[] for _ in range(k)]
    for group in sorted(groups, key=lambda g: (-len(g), g[0])):
        min(folds, key=len).extend(int(rows[i]) for i in group)  # `min`: the lowest-index fold among equal sizes
    return [sorted(fold) for fold in folds]


def cross_validation_split(folds: Sequence[Sequence[int]], fold: int, excluded: Sequence[int] = ()) -> dict:
    """The split of cross-validation round ``fold``: validation = ``folds[fold]``, test = the next fold
    (``fold + 1`` mod ``k``), train = every other fold. Rows outside the folds are in no split."""
    k = len(folds)
    if k < 3:
        raise ValueError(f"cross_validation_split: {k} folds leave nothing to train on; use at least 3")
    if not 0 <= fold < k:
        raise ValueError(f"cross_validation_split: fold {fold} is not in 0..{k - 1}")
    test_fold = (fold + 1) % k
    train = [row for i, rows in enumerate(folds) if i not in (fold, test_fold) for row in rows]
    return _result(train, folds[fold], folds[test_fold], excluded)


def split_sha256(split: dict) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of ``{"train","valid","test","excluded"}``."""
    payload = {k: sorted(int(i) for i in split.get(k, [])) for k in ("train", "valid", "test", "excluded")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
