"""Bioassay-outcome prediction from the pooled 2D-encoder output: the ``assay`` term of the MMSA pretraining
objective (our addition, ``docs/method.md`` §2.8; targets from ``mmsa_hf.data.assays``)."""

from __future__ import annotations

from .fingerprint_head import MMSAFingerprintHead


class MMSAAssayHead(MMSAFingerprintHead):
    r"""Predicts each molecule's outcome in every pretraining assay, from the pooled GIN output.

    .. math::  \mathbf{s}_m = \mathrm{MLP}(\mathbf{g}_m) \in \mathbb{R}^{T}, \qquad p_{m,t} = \sigma(s_{m,t})

    where :math:`\mathbf{g}_m` is the pooled 2D-encoder output (the vector fine-tuning reads) and :math:`T` is
    ``config.num_assay_tasks``: the fingerprint head's two-layer MLP with one logit per assay. The loss is the
    masked BCE of ``fingerprint_head.fingerprint_loss`` over the measured entries only (most are not measured).

    Shapes: ``[B, graph_hidden_size]`` -> logits ``[B, num_assay_tasks]``.
    """

    def __init__(self, config):
        super().__init__(config, num_outputs=config.num_assay_tasks)
