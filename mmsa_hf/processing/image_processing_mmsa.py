# Copyright 2025 The mmsa_hf Authors. Licensed under the MIT licence.
"""Image processor for MMSA: a deterministic RDKit depiction of the molecule, as normalised RGB pixels."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from rdkit import Chem, rdBase
from rdkit.Chem.Draw import rdMolDraw2D
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs

from .feature_extraction_mmsa import MoleculeError, compute_2d_coords, describe_molecule, parse_molecule


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

_WHITE_PNG_CACHE: dict[int, bytes] = {}


def encode_png(image: np.ndarray) -> bytes:
    """uint8 RGB array `[H, W, 3]` -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 RGB array `[H, W, 3]`. Needs Pillow only, no RDKit."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)


def white_png(size: int) -> bytes:
    """The PNG of a white `size x size` RGB image (the depiction of a placeholder row)."""
    if size not in _WHITE_PNG_CACHE:
        _WHITE_PNG_CACHE[size] = encode_png(np.full((size, size, 3), 255, dtype=np.uint8))
    return _WHITE_PNG_CACHE[size]


class MMSAImageProcessorKwargs(ImagesKwargs, total=False):
    image_size: int


class MMSAImageProcessor(BaseImageProcessor):
    r"""
    Draws molecules with RDKit's Cairo drawer (fixed options, white background, default atom palette, no legend,
    no atom indices, no metadata), on RDKit's deterministic 2D coordinates, and normalises the RGB pixels.

    Atom `i` of the drawing is atom `i` of the graph and 3D views: see [`~MMSAImageProcessor.atom_pixel_coords`].

    Args:
        image_size (`int`, *optional*, defaults to 224):
            Side S of the square depiction, in pixels.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to normalise `pixel / 255` with `image_mean` / `image_std`.
        image_mean (`list[float]`, *optional*, defaults to the ImageNet mean):
            Per-channel mean.
        image_std (`list[float]`, *optional*, defaults to the ImageNet std):
            Per-channel standard deviation.
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = MMSAImageProcessorKwargs

    def __init__(
        self,
        image_size: int = 224,
        do_normalize: bool = True,
        image_mean: float | list[float] | None = None,
        image_std: float | list[float] | None = None,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        if int(image_size) < 16:
            raise ValueError(f"image_size must be >= 16 pixels, got {image_size!r}")
        self.image_size = int(image_size)
        self.do_normalize = bool(do_normalize)
        self.image_mean = self._per_channel(IMAGENET_MEAN if image_mean is None else image_mean, "image_mean")
        self.image_std = self._per_channel(IMAGENET_STD if image_std is None else image_std, "image_std")
        if min(self.image_std) <= 0:
            raise ValueError(f"image_std must be positive, got {self.image_std}")

    @staticmethod
    def _per_channel(value: float | Sequence[float], name: str) -> list[float]:
        values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
        if len(values) != 3:
            raise ValueError(f"{name} needs 3 values (RGB), got {values}")
        return values

    # ------------------------------------------------------------------ drawing
    def _draw(self, mol: Chem.Mol) -> rdMolDraw2D.MolDraw2DCairo:
        size = self.image_size
        drawer = rdMolDraw2D.MolDraw2DCairo(size, size)
        options = drawer.drawOptions()
        options.useDefaultAtomPalette()
        options.setBackgroundColour((1.0, 1.0, 1.0, 1.0))
        options.clearBackground = True
        options.includeMetadata = False
        options.addAtomIndices = False
        options.addBondIndices = False
        options.addStereoAnnotation = False
        options.prepareMolsBeforeDrawing = True
        options.bondLineWidth = 2
        options.padding = 0.05
        options.rotate = 0.0
        # Fresh 2D coordinates: never draw a provided 3D conformer. Drawing may append chiral Hs; atom i is unchanged.
        drawer.DrawMolecule(compute_2d_coords(mol))
        drawer.FinishDrawing()
        return drawer

    def depict(self, mol: Chem.Mol) -> bytes:
        """PNG bytes (RGB, S x S) of the depiction of a prepared molecule."""
        return self._draw(mol).GetDrawingText()

    def atom_pixel_coords(self, molecule: Any) -> np.ndarray:
        """Pixel coordinates `(x, y)` float `[n, 2]` of each atom in the depiction (x = column, y = row)."""
        mol = parse_molecule(molecule) if not isinstance(molecule, Chem.Mol) else molecule
        drawer = self._draw(mol)
        coords = [drawer.GetDrawCoords(i) for i in range(mol.GetNumAtoms())]
        return np.asarray([(p.x, p.y) for p in coords], dtype=np.float64).reshape(-1, 2)

    def placeholder_png(self) -> bytes:
        """White image of a `mask`-policy placeholder row."""
        return white_png(self.image_size)

    # ------------------------------------------------------------------ pixels
    def normalize_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 `[B, S, S, 3]` -> float32 `[B, 3, S, S]` (rescaled to [0, 1] and normalised if `do_normalize`)."""
        pixels = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2)).astype(np.float32)
        if self.do_normalize:
            std = np.asarray(self.image_std, dtype=np.float32).reshape(1, 3, 1, 1)
            mean = np.asarray(self.image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
            pixels *= (1.0 / (255.0 * std)).astype(np.float32)
            pixels -= (mean / std).astype(np.float32)
        else:
            pixels *= np.float32(1.0 / 255.0)
        return pixels

    def collate(self, pngs: Sequence[bytes]) -> np.ndarray:
        """Decode and normalise PNG depictions -> float32 `[B, 3, S, S]`."""
        images = [decode_png(bytes(png)) for png in pngs]
        expected = (self.image_size, self.image_size, 3)
        for b, image in enumerate(images):
            if image.shape != expected:
                raise ValueError(f"image {b} has shape {image.shape}, expected {expected} (image_size mismatch?)")
        if not images:
            return np.zeros((0, 3, self.image_size, self.image_size), dtype=np.float32)
        return self.normalize_images(np.stack(images))

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Depict molecules (SMILES strings or RDKit Mols; raises on an invalid one) -> `pixel_values`."""
        molecules = [images] if isinstance(images, (str, Chem.Mol)) or images is None else list(images)
        pngs = []
        with rdBase.BlockLogs():
            for index, molecule in enumerate(molecules):
                try:
                    pngs.append(self.depict(parse_molecule(molecule)))
                except MoleculeError as err:
                    raise ValueError(
                        f"Invalid molecule at index {index} {describe_molecule(molecule)}: {err}"
                    ) from err
        return BatchFeature({"pixel_values": self.collate(pngs)}, tensor_type=return_tensors)

    def __call__(self, images: Any, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)


__all__ = ["MMSAImageProcessor", "decode_png", "encode_png"]
