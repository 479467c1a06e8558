"""The batch restricted to its valid molecules, and the way back to every row.

Placeholder rows (``valid_mask`` False, a SMILES the processor rejected under ``on_error="mask"``) never enter an
encoder, the fusion, the hypergraph or a loss. :func:`select_valid_rows` drops them with their atoms and bonds
and renumbers what is left; :meth:`ValidRows.molecules_to_batch` / :meth:`ValidRows.atoms_to_batch` scatter
results back, with zero rows for the placeholders.

Shapes: ``B`` molecules (``n`` valid), ``N`` atoms (``N_v`` valid), ``E`` directed bonds (``E_v`` valid).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: batch keys with one row per atom / per molecule / per directed bond
ATOM_KEYS = ("atom_features", "atomic_numbers", "pos", "masked_atoms")
MOLECULE_KEYS = ("pixel_values", "conformer_status", "modality_mask")


@dataclass
class ValidRows:
    """The valid part of a batch.

    Attributes:
        inputs: the batch tensors of the valid molecules (``None`` stays ``None``): ``atom_features`` ``[N_v, 9]``,
            ``bond_features`` ``[E_v, 3]``, ``edge_index`` ``[2, E_v]`` (renumbered), ``batch`` ``[N_v]``
            (renumbered), ``atomic_numbers`` ``[N_v]``, ``pos`` ``[N_v, 3]``, ``pixel_values`` ``[n, 3, H, W]``,
            ``conformer_status`` ``[n]``, ``modality_mask`` ``[n, 3]``, ``masked_atoms`` ``[N_v]``.
        ptr: long ``[n + 1]`` atom offsets of the valid molecules.
        molecule_rows: long ``[n]`` row of each valid molecule in the batch.
        atom_rows: long ``[N_v]`` row of each valid atom in the batch.
        batch_size, batch_atoms: ``B`` and ``N``.
        all_valid: no placeholder rows (scattering back is then the identity).
    """

    inputs: dict[str, torch.Tensor | None]
    ptr: torch.Tensor
    molecule_rows: torch.Tensor
    atom_rows: torch.Tensor
    batch_size: int
    batch_atoms: int
    all_valid: bool

    @property
    def num_molecules(self) -> int:
        return int(self.molecule_rows.numel())

    def molecules_to_batch(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """``[n, ...]`` -> ``[B, ...]``, zero rows for placeholders."""
        return _scatter_rows(values, self.molecule_rows, self.batch_size, self.all_valid)

    def atoms_to_batch(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """``[N_v, ...]`` -> ``[N, ...]``, zero rows for the atoms of placeholders."""
        return _scatter_rows(values, self.atom_rows, self.batch_atoms, self.all_valid)


def _scatter_rows(values: torch.Tensor | None, index: torch.Tensor, total: int, identity: bool):
    if values is None or identity:
        return values
    out = values.new_zeros((total, *values.shape[1:]))
    return out.index_copy(0, index, values)


def _take(value: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return value[rows] if value is not None else None


def select_valid_rows(inputs: dict[str, torch.Tensor | None], valid_mask: torch.Tensor) -> ValidRows:
    """Drop the placeholder molecules of ``inputs`` (the batch keys above) where ``valid_mask`` ``[B]`` is False."""
    batch, edge_index = inputs["batch"], inputs["edge_index"]
    batch_size, batch_atoms = int(valid_mask.numel()), int(inputs["atom_features"].size(0))
    all_valid = bool(valid_mask.all())
    if all_valid:
        selected = dict(inputs)
        molecule_rows = torch.arange(batch_size, device=valid_mask.device)
        atom_rows = torch.arange(batch_atoms, device=valid_mask.device)
    else:
        atom_valid = valid_mask[batch]
        molecule_rows = valid_mask.nonzero(as_tuple=True)[0]
        atom_rows = atom_valid.nonzero(as_tuple=True)[0]
        new_atom_id = torch.cumsum(atom_valid.long(), 0) - 1
        new_molecule_id = torch.cumsum(valid_mask.long(), 0) - 1
        edge_kept = atom_valid[edge_index[0]] & atom_valid[edge_index[1]]
        selected = {key: _take(inputs.get(key), atom_valid) for key in ATOM_KEYS}
        selected.update({key: _take(inputs.get(key), valid_mask) for key in MOLECULE_KEYS})
        selected.update(
            bond_features=inputs["bond_features"][edge_kept],
            edge_index=new_atom_id[edge_index[:, edge_kept]],
            batch=new_molecule_id[batch[atom_valid]],
        )
    valid_batch = selected["batch"]
    n = int(molecule_rows.numel())
    counts = torch.bincount(valid_batch, minlength=n) if valid_batch.numel() else valid_batch.new_zeros(n)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    return ValidRows(selected, ptr, molecule_rows, atom_rows, batch_size, batch_atoms, all_valid)
