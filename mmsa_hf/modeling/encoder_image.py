"""Image encoder: a transformers ``ResNetModel`` (ResNet-18 shape by default) on the RDKit depiction, with
ResNet's own stem or a patchify stem (``config.image_stem``)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import ResNetConfig, ResNetModel
from transformers.activations import ACT2FN
from transformers.models.resnet.modeling_resnet import ResNetConvLayer

from .outputs import MMSAEncoderOutput


#: ``image_stem`` -> (kernel size, stride, padding) of the one-convolution stems.
PATCH_STEMS = {"patchify": (4, 4, 0), "overlapping_patchify": (7, 4, 3)}


class MMSAPatchifyStem(nn.Module):
    r"""One-convolution stem: a :math:`k \times k` convolution with stride 4, batch norm and the ResNet's
    activation (``hidden_act``, ReLU), in place of ResNet's 7x7 stride-2 convolution, batch norm, activation and
    3x3 stride-2 max pool.

    .. math::
        \mathbf{E} = \mathrm{ReLU}\big(\mathrm{BN}(\mathbf{W} \star_4 \mathbf{I})\big),
        \qquad \mathbf{W} \in \mathbb{R}^{C_{stem} \times 3 \times k \times k}

    ``image_stem="patchify"``: :math:`k = 4`, no padding, every output pixel reads its own 4x4 patch (ConvNeXt's
    stem). ``"overlapping_patchify"``: :math:`k = 7`, padding 3, neighbouring patches overlap by 3 pixels (the
    overlapping patch embedding of PVT v2). Either way the first ResNet stage gets the same
    :math:`S/4 \times S/4` map as from ResNet's stem, without the :math:`S/2 \times S/2` maps in between.
    Registered as ``resnet.embedder``, so ResNet's ``_init_weights`` initialises it (Kaiming normal, fan-out).

    Shapes:
        - input: ``pixel_values`` ``[B, 3, S, S]``
        - output: ``[B, C_stem, S', S']``, :math:`S' = \lfloor (S + 2p - k) / 4 \rfloor + 1` (``S / 4`` for ``S``
          divisible by 4)
    """

    def __init__(self, num_channels: int, embedding_size: int, stem: str = "patchify", activation: str = "relu"):
        super().__init__()
        kernel_size, stride, padding = PATCH_STEMS[stem]
        self.convolution = nn.Conv2d(num_channels, embedding_size, kernel_size=kernel_size, stride=stride,
                                     padding=padding, bias=False)
        self.normalization = nn.BatchNorm2d(embedding_size)
        self.activation = ACT2FN[activation]  # ResNet's own stem uses its config's `hidden_act` the same way
        self.num_channels = num_channels

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels; the image encoder expects "
                             f"{self.num_channels}.")
        return self.activation(self.normalization(self.convolution(pixel_values)))


#: activations that commute with max pooling: ``max(act(x)) = act(max(x))`` for a non-decreasing ``act``
POOL_COMMUTING_ACTIVATIONS = ("relu",)


class MMSAPoolFirstResNetStem(nn.Module):
    r"""ResNet's own stem (7x7 stride-2 convolution, batch norm, ReLU, 3x3 stride-2 max pool) with the max pool
    taken before the ReLU: the same function and the same gradients, with the ReLU on a quarter of the pixels.

    .. math::
        \mathrm{MaxPool}\big(\mathrm{ReLU}(\mathbf{X})\big) = \mathrm{ReLU}\big(\mathrm{MaxPool}(\mathbf{X})\big),
        \qquad \mathbf{X} = \mathrm{BN}(\mathbf{W} \star_2 \mathbf{I})

    since ReLU is non-decreasing. Gradients agree too: a window whose maximum is positive routes its gradient to
    the same (first) arg-max either way, and one whose maximum is not positive passes none either way. It wraps
    the ``ResNetEmbeddings`` it replaces and keeps its sub-modules under their names (``embedder.convolution``,
    ``embedder.normalization``, ``pooler``), so checkpoints and ``_init_weights`` are unchanged. The stem's ReLU
    and its backward ran on the ``[B, C_stem, S/2, S/2]`` map, 20 ms of a 64-molecule ``small`` step.

    Shapes: ``pixel_values`` ``[B, 3, S, S]`` -> ``[B, C_stem, S/4, S/4]``, as ResNet's stem.
    """

    def __init__(self, embeddings: nn.Module):
        super().__init__()
        self.embedder = embeddings.embedder  # ResNetConvLayer: convolution, normalization, activation
        self.pooler = embeddings.pooler
        self.num_channels = embeddings.num_channels

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels; the image encoder expects "
                             f"{self.num_channels}.")
        layer = self.embedder
        return layer.activation(self.pooler(layer.normalization(layer.convolution(pixel_values))))


class MMSAImageEncoder(nn.Module):
    r"""ResNet image encoder (``transformers.ResNetModel`` built from ``config.image_config``; no torchvision).

    .. math::
        \mathbf{h}^{img} = \mathrm{GAP}(\mathrm{ResNet}(\mathbf{I})) \in \mathbb{R}^{C_{last}}

    where GAP is ResNet's global average pooling (its ``pooler_output``). With ``config.image_stem`` one of
    ``PATCH_STEMS``, ResNet's stem is replaced by [`MMSAPatchifyStem`]; the stages are ResNet's. With
    ``config.image_stem_kernel_size`` other than 7, ResNet's stem convolution is rebuilt (transformers'
    ``ResNetConvLayer``, stride 2, padding ``k // 2``) and the rest of the stem is kept. ResNet's own
    stem with a ReLU runs as [`MMSAPoolFirstResNetStem`] (the same function, pooled before the ReLU). The projection to the common width
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
        stem = getattr(config, "image_stem", "resnet")
        kernel_size = getattr(config, "image_stem_kernel_size", 7)
        if stem == "resnet" and kernel_size != 7:  # ResNet's stem with another kernel: its conv layer rebuilt
            self.resnet.embedder.embedder = ResNetConvLayer(image_config.num_channels, image_config.embedding_size,
                                                            kernel_size=kernel_size, stride=2,
                                                            activation=image_config.hidden_act)
        if stem in PATCH_STEMS:
            self.resnet.embedder = MMSAPatchifyStem(image_config.num_channels, image_config.embedding_size, stem,
                                                    image_config.hidden_act)
        elif image_config.hidden_act in POOL_COMMUTING_ACTIVATIONS:  # an implementation detail: same maths
            self.resnet.embedder = MMSAPoolFirstResNetStem(self.resnet.embedder)
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
