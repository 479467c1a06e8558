"""Atom i is the same atom in the graph, the 3D conformer and the image."""

from __future__ import annotations

import numpy as np
import torch
from rdkit import Chem


# RDKit's default atom palette, as 8-bit RGB tests: O red, N blue, Cl green.
ELEMENT_COLOUR_TESTS = {
    8: lambda r, g, b: (r > 200) & (g < 90) & (b < 90),
    7: lambda r, g, b: (b > 200) & (r < 90) & (g < 90),
    17: lambda r, g, b: (g > 150) & (r < 90) & (b < 90),
}


def _has_colour(image: np.ndarray, xy: np.ndarray, test, radius: int) -> bool:
    x, y = int(round(xy[0])), int(round(xy[1]))
    patch = image[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].astype(int)
    return bool(test(patch[..., 0], patch[..., 1], patch[..., 2]).any())


def _denormalise(pixel_values: torch.Tensor, image_processor) -> np.ndarray:
    mean = torch.tensor(image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(3, 1, 1)
    return ((pixel_values * std + mean) * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def test_graph_and_3d_alignment(bbbp_small, bbbp_small_batch):
    """In every conformer, each atom's nearest atom is one of its graph neighbours, at a bond length."""
    out = bbbp_small_batch
    ptr, pos, edge_index = out["ptr"], out["pos"].double(), out["edge_index"]
    checked = 0
    for b in range(len(bbbp_small)):
        start, end = int(ptr[b]), int(ptr[b + 1])
        if end - start < 2:
            continue
        mask = (edge_index[0] >= start) & (edge_index[0] < end)
        src, dst = edge_index[:, mask] - start
        p = pos[start:end]
        bond_lengths = (p[src] - p[dst]).norm(dim=1)
        assert ((bond_lengths > 0.9) & (bond_lengths < 2.3)).all(), (b, bond_lengths)
        dist = torch.cdist(p, p) + torch.eye(end - start) * 1e6
        nearest = dist.argmin(dim=1)
        neighbours = {(int(i), int(j)) for i, j in zip(src, dst)}
        for i in range(end - start):
            if any(k == i for k, _ in neighbours):  # atoms with bonds (not lone ions)
                assert (i, int(nearest[i])) in neighbours, (b, i)
                checked += 1
    assert checked > 150


def test_image_alignment(processor, bbbp_small, bbbp_small_batch):
    """The pixel at the drawn position of each O, N and Cl (graph index i) has that element's colour."""
    out = bbbp_small_batch
    hits = {8: 0, 7: 0, 17: 0}
    for b, smiles in enumerate(bbbp_small):
        start, end = int(out["ptr"][b]), int(out["ptr"][b + 1])
        z = out["atomic_numbers"][start:end].tolist()
        coords = processor.atom_pixel_coords(smiles)
        assert coords.shape == (end - start, 2)
        assert (coords >= 0).all() and (coords < processor.image_processor.image_size).all()
        image = _denormalise(out["pixel_values"][b], processor.image_processor)
        mol = Chem.MolFromSmiles(smiles)
        for i, zi in enumerate(z):
            if zi in ELEMENT_COLOUR_TESTS:
                assert _has_colour(image, coords[i], ELEMENT_COLOUR_TESTS[zi], radius=8), (smiles, i, zi)
                hits[zi] += 1
            elif zi == 6 and all(n.GetAtomicNum() == 6 for n in mol.GetAtomWithIdx(i).GetNeighbors()):
                # a carbon with only carbon neighbours has no hetero-atom colour around it
                for test in ELEMENT_COLOUR_TESTS.values():
                    assert not _has_colour(image, coords[i], test, radius=3), (smiles, i)
    assert all(count >= 3 for count in hits.values()), hits


def test_image_is_deterministic_rgb_depiction(processor, bbbp_small):
    from mmsa_hf.processing import decode_png

    ip = processor.image_processor
    mol = processor.feature_extractor.prepare_molecule(bbbp_small[1])
    png = ip.depict(mol)
    assert png == ip.depict(Chem.Mol(mol))
    image = decode_png(png)
    assert image.shape == (224, 224, 3) and image.dtype == np.uint8
    assert (image[0, 0] == 255).all()  # white background
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 10  # colour, not black and white


def test_provided_3d_conformer_does_not_change_image(processor, bbbp_small):
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(bbbp_small[3]))
    AllChem.EmbedMolecule(mol, randomSeed=7)
    from_mol = processor.featurize([mol])[0]
    from_smiles = processor.featurize([bbbp_small[3]])[0]
    assert from_mol["image_png"] == from_smiles["image_png"]
    assert from_mol["conformer_status"] == 3  # provided
