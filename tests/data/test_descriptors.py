"""RDKit descriptor targets: values, the NaN policy, the CDF normaliser and the cached column join."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import Crippen, Descriptors

from mmsa_hf.data.descriptors import (
    DescriptorNormalizer,
    add_descriptors,
    compute_descriptors,
    descriptor_names,
)


def test_a_value_beyond_float32_is_nan_not_inf():
    names = descriptor_names()
    large = "O=C(O)" + "C(C(=O)O)" * 40  # its Ipc is about 1.1e54, past float32's 3.4e38
    values = compute_descriptors([large])
    assert not np.isinf(values).any()
    assert np.isnan(values[0, names.index("Ipc")])
    assert np.isfinite(values[0, names.index("MolLogP")])


def test_values_are_rdkits_and_a_bad_smiles_is_a_row_of_nan():
    names = descriptor_names()
    values = compute_descriptors(["CCO", "not a smiles", "c1ccccc1O"])
    assert values.shape == (3, len(names)) and values.dtype == np.float32
    ethanol = Chem.MolFromSmiles("CCO")
    assert values[0, names.index("MolLogP")] == pytest.approx(Crippen.MolLogP(ethanol), rel=1e-5)
    assert values[2, names.index("TPSA")] == pytest.approx(Descriptors.TPSA(Chem.MolFromSmiles("c1ccccc1O")), rel=1e-5)
    assert np.isnan(values[1]).all()
    assert np.isfinite(values[0]).mean() > 0.9


def test_normalizer_is_a_monotone_map_to_the_unit_interval():
    rng = np.random.default_rng(0)
    values = np.stack([rng.lognormal(size=500), rng.integers(0, 3, size=500), np.full(500, 7.0)], axis=1)
    normalizer = DescriptorNormalizer.fit(values, ["heavy_tailed", "count", "constant"])
    assert normalizer.masked == ["constant"]
    targets = normalizer.transform(values)
    assert np.nanmin(targets) >= 0.0 and np.nanmax(targets) <= 1.0
    assert np.isnan(targets[:, 2]).all()
    order = np.argsort(values[:, 0])
    assert (np.diff(targets[order, 0]) >= 0).all()
    assert abs(np.median(targets[:, 0]) - 0.5) < 0.02  # the CDF spreads a heavy tail evenly
    outside = normalizer.transform(np.array([[1e9, -5.0, np.nan]]))
    assert outside[0, 0] == 1.0 and outside[0, 1] == 0.0 and np.isnan(outside[0, 2])


def test_normalizer_round_trips_through_json(tmp_path):
    values = np.random.default_rng(1).normal(size=(50, 2))
    values[3, 1] = np.nan
    normalizer = DescriptorNormalizer.fit(values, ["a", "b"], num_quantiles=11)
    normalizer.save(tmp_path / "n.json")
    json.loads((tmp_path / "n.json").read_text())  # plain JSON, no NaN literals
    again = DescriptorNormalizer.load(tmp_path / "n.json")
    np.testing.assert_array_equal(again.transform(values), normalizer.transform(values))
    with pytest.raises(ValueError, match="expected"):
        normalizer.transform(values[:, :1])


def test_add_descriptors_joins_a_column_and_keeps_the_others():
    dataset = datasets.Dataset.from_dict({"canonical_smiles": ["CCO", "CCN", "c1ccccc1"], "label": [0, 1, 0]})
    out = add_descriptors(dataset)
    assert out.column_names == ["canonical_smiles", "label", "descriptors"]
    assert out["label"] == [0, 1, 0]
    np.testing.assert_allclose(np.asarray(out["descriptors"]), compute_descriptors(dataset["canonical_smiles"]))
    with pytest.raises(ValueError, match="already has"):
        add_descriptors(out)
    with pytest.raises(ValueError, match="no column 'smiles'"):
        add_descriptors(dataset, smiles_column="smiles")
