"""Test helpers shipped with the package: random contract-valid batches and the E(3)/permutation check.

``make_random_batch`` builds a batch that obeys ``docs/batch-format.md`` (including ``mask``-policy placeholder
rows) without RDKit. ``assert_invariant`` checks that a random rotation/reflection + translation of ``pos`` and a
permutation of the atoms of every molecule leave the molecule embeddings unchanged.
"""

from __future__ import annotations

import torch

from .configuration_mmsa import ATOM_FEATURE_VOCAB_SIZES, BOND_FEATURE_VOCAB_SIZES, CONFORMER_STATUSES


def make_random_batch(
    num_molecules: int = 4,
    num_placeholders: int = 0,
    placeholder_positions: list[int] | None = None,
    image_size: int = 48,
    min_atoms: int = 3,
    max_atoms: int = 10,
    seed: int = 0,
    atom_vocab_sizes=ATOM_FEATURE_VOCAB_SIZES,
    bond_vocab_sizes=BOND_FEATURE_VOCAB_SIZES,
) -> dict:
    """A random batch with exactly the keys and dtypes of the batch contract.

    Molecules are random trees plus one ring-closing bond when possible, with random categorical features
    (atomic-number column and ``atomic_numbers`` consistent), coordinates spread like a small molecule, and a
    random image. ``num_placeholders`` placeholder rows (one dummy atom, unknown features, Z = 0, pos 0, no bonds,
    white image, status ``invalid``, ``valid_mask`` False) are inserted at ``placeholder_positions`` (default:
    spread through the batch).
    """
    g = torch.Generator().manual_seed(seed)
    total = num_molecules + num_placeholders
    if placeholder_positions is None:
        step = total / max(num_placeholders, 1)
        placeholder_positions = [int(i * step + step / 2) for i in range(num_placeholders)]
    placeholder_positions = sorted(set(int(p) for p in placeholder_positions))
    if len(placeholder_positions) != num_placeholders or any(not 0 <= p < total for p in placeholder_positions):
        raise ValueError("placeholder_positions must be distinct indices into the batch")

    molecules = [
        _placeholder_molecule(atom_vocab_sizes, bond_vocab_sizes, image_size) if row in placeholder_positions
        else _random_molecule(g, min_atoms, max_atoms, atom_vocab_sizes, bond_vocab_sizes, image_size)
        for row in range(total)
    ]
    offsets = torch.tensor([0] + [m["n"] for m in molecules]).cumsum(0)
    counts = torch.tensor([m["n"] for m in molecules])
    return {
        "atom_features": torch.cat([m["atom_features"] for m in molecules]).long(),
        "bond_features": torch.cat([m["bond_features"] for m in molecules]).long(),
        "edge_index": torch.cat([m["edges"] + int(o) for m, o in zip(molecules, offsets)], dim=1).long(),
        "batch": torch.cat([torch.full((m["n"],), row, dtype=torch.long) for row, m in enumerate(molecules)]),
        "ptr": torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)]),
        "atomic_numbers": torch.cat([m["z"] for m in molecules]).long(),
        "pos": torch.cat([m["pos"] for m in molecules]).float(),
        "conformer_status": torch.tensor([m["status"] for m in molecules], dtype=torch.long),
        "pixel_values": torch.stack([m["image"] for m in molecules]).float(),
        "valid_mask": torch.tensor([m["valid"] for m in molecules], dtype=torch.bool),
        "input_indices": torch.arange(total, dtype=torch.long),
        "smiles": [m["smiles"] for m in molecules],
    }


def _placeholder_molecule(atom_vocab_sizes, bond_vocab_sizes, image_size: int) -> dict:
    """One dummy atom with unknown features, Z = 0, pos 0, no bonds, a white image, status ``invalid``."""
    return {"n": 1, "atom_features": torch.tensor([[v - 1 for v in atom_vocab_sizes]]),
            "z": torch.zeros(1, dtype=torch.long), "pos": torch.zeros(1, 3),
            "edges": torch.empty(2, 0, dtype=torch.long),
            "bond_features": torch.empty(0, len(bond_vocab_sizes), dtype=torch.long),
            "image": torch.ones(3, image_size, image_size), "status": CONFORMER_STATUSES.index("invalid"),
            "valid": False, "smiles": ""}


def _random_molecule(g, min_atoms, max_atoms, atom_vocab_sizes, bond_vocab_sizes, image_size: int) -> dict:
    """A random tree plus one ring-closing bond when possible, consistent atomic numbers, small-molecule-like
    coordinates and a random image."""
    n = int(torch.randint(min_atoms, max_atoms + 1, (1,), generator=g))
    z_choices = torch.tensor([6, 6, 6, 7, 8, 9, 16, 17])
    z = z_choices[torch.randint(0, len(z_choices), (n,), generator=g)]
    atom_features = torch.stack([torch.randint(0, v - 1, (n,), generator=g) for v in atom_vocab_sizes], dim=1)
    atom_features[:, 0] = z - 1  # atomic number 1..118 -> index 0..117
    parents = [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
    pairs = [(p, i) for i, p in zip(range(1, n), parents)]
    if n >= 4 and (0, n - 1) not in pairs:
        pairs.append((0, n - 1))  # close one ring
    edges = torch.tensor([[a for a, b in pairs] + [b for a, b in pairs], [b for a, b in pairs] + [a for a, b in pairs]],
                         dtype=torch.long)
    half = torch.stack([torch.randint(0, v - 1, (len(pairs),), generator=g) for v in bond_vocab_sizes], dim=1)
    return {"n": n, "atom_features": atom_features, "z": z, "edges": edges,
            "bond_features": torch.cat([half, half], dim=0), "pos": torch.randn(n, 3, generator=g) * 1.5,
            "image": torch.randn(3, image_size, image_size, generator=g), "status": 0, "valid": True,
            "smiles": "C" * n}


def random_orthogonal_matrix(generator: torch.Generator | None = None, reflect: bool | None = None) -> torch.Tensor:
    """A random 3x3 orthogonal matrix (a rotation, times a reflection when ``reflect``; random if None)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect is None:
        reflect = bool(torch.randint(0, 2, (1,), generator=generator))
    if reflect:
        q = q @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    return q


def transform_batch(batch: dict, seed: int = 0, reflect: bool | None = None, permute: bool = True):
    """Rotate (+ maybe reflect) and translate ``pos`` and permute the atoms inside each molecule.

    Returns ``(new_batch, perm)`` where ``new_batch["x"][i] == batch["x"][perm[i]]`` for every atom-level key
    (edges remapped; edge order shuffled too; ``batch``/``ptr`` unchanged because atoms stay grouped)."""
    g = torch.Generator().manual_seed(seed)
    out = dict(batch)
    num_atoms = batch["atom_features"].size(0)
    if permute:
        ptr = batch["ptr"]
        perm = torch.cat(
            [int(ptr[b]) + torch.randperm(int(ptr[b + 1] - ptr[b]), generator=g) for b in range(ptr.numel() - 1)]
        ) if num_atoms else torch.empty(0, dtype=torch.long)
    else:
        perm = torch.arange(num_atoms)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    for key in ("atom_features", "atomic_numbers", "pos", "batch"):
        if batch.get(key) is not None:
            out[key] = batch[key][perm]
    if batch.get("edge_index") is not None:
        edge_perm = torch.randperm(batch["edge_index"].size(1), generator=g) if permute else torch.arange(batch["edge_index"].size(1))
        out["edge_index"] = inverse[batch["edge_index"][:, edge_perm]]
        out["bond_features"] = batch["bond_features"][edge_perm]
    if batch.get("pos") is not None:
        rotation = random_orthogonal_matrix(g, reflect)
        translation = torch.randn(1, 3, generator=g, dtype=torch.float64) * 5.0
        pos = out["pos"].double() @ rotation.t() + translation
        out["pos"] = pos.to(batch["pos"].dtype)
    return out, perm


_MOLECULE_KEYS = (
    "molecule_embedding",
    "unified_embedding",
    "fused_embedding",
    "graph_embedding",
    "image_embedding",
    "geometry_embedding",
    "graph_pooled_output",
    "geometry_pooled_output",
    "anchor_assignments",
)
_ATOM_KEYS = ("atom_embeddings", "geometry_atom_embeddings")


@torch.no_grad()
def assert_invariant(model_or_encoder, batch: dict, atol: float = 1e-4, seed: int = 0, num_trials: int = 3) -> float:
    """Assert that molecule embeddings are invariant to E(3) transforms of ``pos`` and atom permutations.

    ``model_or_encoder`` is called as ``module(**batch)`` (an [`MMSAModel`] or a view encoder) in eval mode (the
    previous mode is restored). Every molecule-level output (``molecule_embedding``, ``unified_embedding``,
    view embeddings, ...) must match to ``atol``; atom-level outputs must match after undoing the permutation.
    Returns the largest absolute difference seen.
    """
    was_training = model_or_encoder.training
    model_or_encoder.eval()
    try:
        reference = model_or_encoder(**batch)
        worst = 0.0
        for trial in range(num_trials):
            moved, perm = transform_batch(batch, seed=seed + trial, reflect=bool(trial % 2))
            output = model_or_encoder(**moved)
            compared = 0
            for key in _MOLECULE_KEYS + _ATOM_KEYS:
                a, b = _get(reference, key), _get(output, key)
                if a is None or b is None:
                    continue
                if key in _ATOM_KEYS:
                    a = a[perm]
                diff = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
                worst = max(worst, diff)
                if not diff <= atol:
                    raise AssertionError(f"`{key}` changed by {diff:.3g} > atol={atol} under rotation/translation/permutation (trial {trial})")
                compared += 1
            if compared == 0:
                raise AssertionError("assert_invariant: the module returned no known embedding field")
        return worst
    finally:
        model_or_encoder.train(was_training)


def _get(output, key):
    if isinstance(output, dict):
        return output.get(key)
    return getattr(output, key, None)


def subset_batch(batch: dict, indices) -> dict:
    """The batch of molecules ``indices`` (in that order) from a contract batch, re-collated (offsets, ``batch``,
    ``ptr`` rebuilt). Useful to put the same molecule into different batches."""
    ptr = batch["ptr"]
    parts = {k: [] for k in ("atom_features", "atomic_numbers", "pos", "bond_features", "edge_index")}
    new_batch, counts = [], []
    offset = 0
    for new_id, b in enumerate(int(i) for i in indices):
        start, end = int(ptr[b]), int(ptr[b + 1])
        for key in ("atom_features", "atomic_numbers", "pos"):
            parts[key].append(batch[key][start:end])
        edge_mask = (batch["edge_index"][0] >= start) & (batch["edge_index"][0] < end)
        parts["edge_index"].append(batch["edge_index"][:, edge_mask] - start + offset)
        parts["bond_features"].append(batch["bond_features"][edge_mask])
        new_batch.append(torch.full((end - start,), new_id, dtype=torch.long))
        counts.append(end - start)
        offset += end - start
    index = torch.tensor([int(i) for i in indices], dtype=torch.long)
    out = {key: torch.cat(value, dim=1 if key == "edge_index" else 0) for key, value in parts.items()}
    out["batch"] = torch.cat(new_batch)
    out["ptr"] = torch.cat([torch.zeros(1, dtype=torch.long), torch.tensor(counts, dtype=torch.long).cumsum(0)])
    for key in ("conformer_status", "pixel_values", "valid_mask", "input_indices"):
        if batch.get(key) is not None:
            out[key] = batch[key][index]
    if batch.get("smiles") is not None:
        out["smiles"] = [batch["smiles"][int(i)] for i in indices]
    return out
