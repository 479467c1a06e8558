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
    execute faster than NCHW; the maths and the weights' layout on disk are unchanged. Set
    ``encoder.memory_format = torch.contiguous_format`` to run in NCHW (the speed benchmark's baseline).

    Shapes:
        - input: ``pixel_values`` float ``[B, 3, S, S]`` (normalised RGB, any ``S`` >= 32)
        - output: ``molecule_embedding`` ``[B, C_last]`` with ``C_last = image_config.hidden_sizes[-1]``
    """

    #: memory format of the input batch (an implementation detail, not a config field)
    memory_format = torch.channels_last

    def __init__(self, config):
        super().__init__()
        image_config = config.image_config
        if not isinstance(image_config, ResNetConfig):  # defensive: the config always holds a ResNetConfig
            image_config = ResNetConfig(**dict(image_config or {}))
        self.resnet = ResNetModel(image_config)
        self.output_size = int(image_config.hidden_sizes[-1])

    def forward(self, pixel_values: torch.Tensor, **unused) -> MMSAEncoderOutput:
        pixel_values = pixel_values.contiguous(memory_format=self.memory_format)
        pooled = self.resnet(pixel_values=pixel_values, return_dict=True).pooler_output
        return MMSAEncoderOutput(molecule_embedding=pooled.flatten(1))
