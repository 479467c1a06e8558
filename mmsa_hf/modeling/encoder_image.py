"""Image encoder: a transformers ``ResNetModel`` (ResNet-18 shape by default) on the RDKit depiction."""

from __future__ import annotations

import torch
from torch import nn
from transformers import ResNetConfig, ResNetModel

from .outputs import MMSAEncoderOutput


class MMSAImageEncoder(nn.Module):
    r"""ResNet image encoder (``transformers.ResNetModel`` built from ``config.image_config``; no torchvision).

    .. math::
        \mathbf{h}^{img} = \mathrm{GAP}(\mathrm{ResNet}(\mathbf{I})) \in \mathbb{R}^{C_{last}}

    where GAP is ResNet's global average pooling (its ``pooler_output``). The projection to the common width
    ``D`` is done by the view projection heads of [`MMSAModel`].

    The convolutions run in ``channels_last`` (NHWC) memory format, which oneDNN (CPU) and cuDNN (tensor cores)
    execute faster than NCHW; the maths and the weights' layout on disk are unchanged. On CPU this is skipped
    for stems narrower than 16 channels (a oneDNN crash, see ``MIN_CHANNELS_LAST_STEM``). Set
    ``encoder.memory_format = torch.contiguous_format`` to run in NCHW (the speed benchmark's baseline).

    Shapes:
        - input: ``pixel_values`` float ``[B, 3, S, S]`` (normalised RGB, any ``S`` >= 32)
        - output: ``molecule_embedding`` ``[B, C_last]`` with ``C_last = image_config.hidden_sizes[-1]``
    """

    #: memory format of the input batch (an implementation detail, not a config field); None = automatic:
    #: channels_last on CUDA, and on CPU when the stem has at least ``MIN_CHANNELS_LAST_STEM`` channels.
    memory_format = None
    #: torch 2.13's CPU (oneDNN) backward crashes with a segmentation fault on an 8-channel stem at 224 px in
    #: channels_last (the ``tiny`` preset); 16 channels and more (``small``, ``base``) were checked to run.
    MIN_CHANNELS_LAST_STEM = 16

    def __init__(self, config):
        super().__init__()
        image_config = config.image_config
        if not isinstance(image_config, ResNetConfig):  # defensive: the config always holds a ResNetConfig
            image_config = ResNetConfig(**dict(image_config or {}))
        self.resnet = ResNetModel(image_config)
        self.output_size = int(image_config.hidden_sizes[-1])

    def input_memory_format(self, pixel_values: torch.Tensor) -> torch.memory_format:
        """``memory_format`` if set, else channels_last where it is known to run (see the class attributes)."""
        if self.memory_format is not None:
            return self.memory_format
        wide_stem = self.resnet.config.embedding_size >= self.MIN_CHANNELS_LAST_STEM
        return torch.channels_last if (pixel_values.is_cuda or wide_stem) else torch.contiguous_format

    def forward(self, pixel_values: torch.Tensor, **unused) -> MMSAEncoderOutput:
        pixel_values = pixel_values.contiguous(memory_format=self.input_memory_format(pixel_values))
        pooled = self.resnet(pixel_values=pixel_values, return_dict=True).pooler_output
        return MMSAEncoderOutput(molecule_embedding=pooled.flatten(1))
