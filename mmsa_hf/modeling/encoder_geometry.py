"""3D geometry encoder: an E(3)-invariant SchNet-style continuous-filter network over interatomic distances.

Written in plain torch (no ``torch-cluster`` / ``pyg-lib``): the radius graph is built per molecule from the
``ptr``/``batch`` vectors. The blocks follow PyG's ``torch_geometric.nn.models.schnet`` but avoid its
``.item()`` calls at construction time, which break transformers' meta-device initialisation.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .encoder_graph import MMSACategoricalEncoder, infer_num_graphs, pool_atoms
from .outputs import MMSAEncoderOutput

logger = logging.getLogger(__name__)


def atom_pairs_per_molecule(
    pos: torch.Tensor,
    batch: torch.Tensor,
    cutoff: float,
    ptr: torch.Tensor | None = None,
    num_graphs: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""All unordered within-molecule atom pairs :math:`\{j, i\}` with ``j < i`` and
    ``||pos_i - pos_j|| < cutoff``.

    Plain-torch replacement of ``torch_cluster.radius_graph`` (no neighbour cap). Costs
    :math:`\sum_b n_b (n_b - 1) / 2` pair evaluations, which is small for molecules.

    Args:
        pos: float ``[N, 3]``; batch: long ``[N]`` sorted molecule index; ptr: optional long ``[B + 1]``.

    Returns:
        ``pairs`` long ``[2, Q]`` (row 0 = ``j`` < row 1 = ``i``) and ``distance`` ``[Q]``.
    """
    num_atoms = pos.size(0)
    device = pos.device
    if num_atoms == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device), pos.new_empty(0)
    if ptr is None:
        num_graphs = infer_num_graphs(batch, None, num_graphs)
        counts = torch.bincount(batch, minlength=num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    counts = ptr[1:] - ptr[:-1]
    per_atom = counts[batch]  # size of the molecule each atom belongs to
    target = torch.repeat_interleave(torch.arange(num_atoms, device=device), per_atom)
    run_start = torch.repeat_interleave(per_atom.cumsum(0) - per_atom, per_atom)
    local = torch.arange(target.numel(), device=device) - run_start
    source = ptr[batch[target]] + local
    keep = source < target
    source, target = source[keep], target[keep]
    distance = (pos[source] - pos[target]).norm(dim=-1)
    keep = distance < cutoff
    return torch.stack([source[keep], target[keep]]), distance[keep]


def radius_graph_per_molecule(pos: torch.Tensor, batch: torch.Tensor, cutoff: float, ptr: torch.Tensor | None = None,
                              num_graphs: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""All within-molecule atom pairs ``(j -> i)`` with ``i != j`` and ``||pos_i - pos_j|| < cutoff``.

    The ``Q`` unordered pairs of [`atom_pairs_per_molecule`] (``j < i``), then the same pairs reversed: edge
    ``q + Q`` is edge ``q`` turned round and has the same distance.

    Returns:
        ``edge_index`` long ``[2, P]`` (row 0 = source ``j``, row 1 = target ``i``, ``P = 2Q``) and
        ``distance`` ``[P]``.
    """
    pairs, distance = atom_pairs_per_molecule(pos, batch, cutoff, ptr=ptr, num_graphs=num_graphs)
    return torch.cat([pairs, pairs.flip(0)], dim=1), torch.cat([distance, distance])


def _message_passing_of(encoder: "MMSAGeometryEncoder", h: torch.Tensor, pairs: torch.Tensor,
                        distance: torch.Tensor) -> torch.Tensor:
    """``encoder.message_passing(h, pairs, distance)``: the function that ``compile_message_passing`` compiles."""
    return encoder.message_passing(h, pairs, distance)


class MMSAShiftedSoftplus(nn.Module):
    r""":math:`\mathrm{ssp}(x) = \ln(1 + e^x) - \ln 2`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - math.log(2.0)


class MMSAGaussianRBF(nn.Module):
    r"""Gaussian radial basis :math:`e_k(d) = \exp(-\gamma (d - \mu_k)^2)`, :math:`\mu_k` evenly spaced on
    ``[0, cutoff]``, :math:`\gamma = 1 / (2 \Delta\mu^2)`. The centres are a persistent buffer (``offset``)."""

    def __init__(self, cutoff: float, num_rbf: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.num_rbf = int(num_rbf)
        step = self.cutoff / (self.num_rbf - 1)
        self.coeff = -0.5 / step**2
        self.register_buffer("offset", torch.linspace(0.0, self.cutoff, self.num_rbf), persistent=True)

    def reference_offset(self) -> torch.Tensor:
        """The centres recomputed from the hyper-parameters (used by ``_init_weights``)."""
        return torch.linspace(0.0, self.cutoff, self.num_rbf)

    def forward(self, distance: torch.Tensor) -> torch.Tensor:
        diff = distance.unsqueeze(-1) - self.offset.to(distance.dtype)
        return torch.exp(self.coeff * diff.pow(2))


def cosine_cutoff(distance: torch.Tensor, cutoff: float) -> torch.Tensor:
    r"""Cosine envelope :math:`C(d) = \tfrac{1}{2}\left(\cos(\pi d / r_c) + 1\right)` (``1`` at ``d = 0``, ``0`` at
    ``d = r_c``).

    Shapes: ``distance`` ``[P]`` -> ``[P]``.
    """
    return 0.5 * (torch.cos(distance * (math.pi / cutoff)) + 1.0)


class MMSAFilterNetwork(nn.Sequential):
    r"""Continuous-filter generator :math:`\mathrm{MLP}_{filter}(\mathbf{e}) = \mathrm{Lin}(\mathrm{ssp}(
    \mathrm{Lin}(\mathbf{e})))`, an ``nn.Sequential`` so its parameter names (``0.weight``, ``2.weight``) stay
    those of earlier checkpoints.

    Shapes: ``rbf`` ``[P, R]`` -> filters ``[P, F]`` (``R = geometry_num_rbf``, ``F = geometry_num_filters``).
    """

    def __init__(self, num_rbf: int, num_filters: int):
        super().__init__(nn.Linear(num_rbf, num_filters), MMSAShiftedSoftplus(), nn.Linear(num_filters, num_filters))

    def filters(self, rbf: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbf{W}_{ji} = \mathrm{MLP}_{filter}(\mathbf{e}(d_{ji})) \cdot C(d_{ji})`, ``[P, F]``."""
        raw = self(rbf)  # bf16 under autocast: keep the product in that dtype
        return raw * envelope.unsqueeze(-1).to(raw.dtype)


class MMSAInteractionBlock(nn.Module):
    r"""SchNet interaction block: a continuous-filter convolution followed by an atom-wise MLP.

    .. math::
        \mathbf{W}_{ji} &= \mathrm{MLP}_{filter}(\mathbf{e}(d_{ji})) \cdot
            \tfrac{1}{2}\left(\cos(\pi d_{ji} / r_c) + 1\right) \\
        \mathbf{v}_i &= \mathrm{Lin}_3\left(\mathrm{ssp}\left(\mathrm{Lin}_2\left(
            \textstyle\sum_{j} \mathrm{Lin}_1(\mathbf{h}_j) \odot \mathbf{W}_{ji}\right)\right)\right)

    and the caller adds the residual :math:`\mathbf{h}_i \leftarrow \mathbf{h}_i + \mathbf{v}_i`. The block owns
    its filter network (``filter_network``) unless ``own_filter_network=False``: then the encoder computes one set
    of filters :math:`\mathbf{W}_{ji}` with a filter network shared by every block and passes it in.

    Shapes:
        - input: ``h`` ``[N, H]``, ``edge_index`` long ``[2, P]``, ``rbf`` ``[Q, R]``, ``envelope`` ``[Q]`` (or
          ``filters`` ``[Q, F]`` when the filter network is shared), either one per edge (``Q = P``) or one per
          unordered pair (``P = 2Q``, the edge order of [`radius_graph_per_molecule`]: edges ``q`` and ``q + Q``
          are one pair turned round, and :math:`\mathbf{W}_{ji} = \mathbf{W}_{ij}` since it depends on
          :math:`d_{ji} = d_{ij}` only, so the filter network runs once per pair)
        - output: ``v`` ``[N, H]``
    """

    def __init__(self, hidden_size: int, num_filters: int, num_rbf: int, own_filter_network: bool = True):
        super().__init__()
        self.filter_network = MMSAFilterNetwork(num_rbf, num_filters) if own_filter_network else None
        self.in_projection = nn.Linear(hidden_size, num_filters, bias=False)
        self.out_projection = nn.Linear(num_filters, hidden_size)
        self.activation = MMSAShiftedSoftplus()
        self.output = nn.Linear(hidden_size, hidden_size)

    def forward(self, h, edge_index, rbf=None, envelope=None, filters=None):
        if filters is None:
            filters = self.filter_network.filters(rbf, envelope)
        source, target = edge_index
        gathered = self.in_projection(h)[source]
        if filters.size(0) != gathered.size(0):  # one filter per unordered pair, for both directions
            messages = (gathered.view(2, filters.size(0), -1) * filters).view(gathered.shape)
        else:
            messages = gathered * filters
        aggregated = messages.new_zeros(h.size(0), messages.size(-1)).index_add_(0, target, messages)
        return self.output(self.activation(self.out_projection(aggregated)))


class MMSAGeometryEncoder(nn.Module):
    r"""E(3)-invariant SchNet-style 3D encoder.

    .. math::
        \mathbf{h}^{(0)}_i &= \mathbf{E}^{Z}[Z_i] \;(+\; \textstyle\sum_c \mathbf{E}^{atom}_c[x_{i,c}]
            \text{ if } \texttt{geometry\_use\_atom\_features}) \\
        \mathbf{h}^{(l)}_i &= \mathbf{h}^{(l-1)}_i + \mathrm{Interaction}^{(l)}(\mathbf{h}^{(l-1)},
            \{d_{ji} = \|\mathbf{r}_j - \mathbf{r}_i\| : d_{ji} < r_c\}) \\
        \mathbf{a}_i &= \mathrm{Lin}(\mathrm{ssp}(\mathrm{Lin}(\mathbf{h}^{(L)}_i))), \qquad
        \mathbf{g} = \mathrm{pool}_{i \in \text{mol}}(\mathbf{a}_i)

    The pair list, the distances, the radial basis :math:`\mathbf{e}(d_{ji})` and the cosine envelope are
    computed once per forward and reused by every block, once per unordered atom pair: the filter of
    :math:`j \to i` is the filter of :math:`i \to j`, so each filter network runs on half the edges (the same
    maths as running it on every edge). With ``geometry_shared_filter_network=True`` one filter
    network (``filter_network``) serves every block, so the filters :math:`\mathbf{W}_{ji}` are computed once too;
    otherwise each block has its own (``interactions.<l>.filter_network``), as in SchNet.

    Only distances between atoms of the same molecule enter, so the output is invariant to rotations,
    reflections and translations of ``pos`` and (with a permutation-invariant pooling) to atom order
    (``testing_utils.assert_invariant`` checks this).

    Shapes:
        - input: ``atomic_numbers`` long ``[N]``, ``pos`` float ``[N, 3]``, ``batch`` long ``[N]``,
          optional ``atom_features`` long ``[N, 9]``, ``ptr`` long ``[B + 1]``
        - output: ``atom_embeddings`` ``[N, H]``, ``molecule_embedding`` ``[B, H]`` with
          ``H = geometry_hidden_size``
    """

    #: atomic numbers 0..118 (0 = placeholder / unknown); anything larger maps to 119.
    num_atom_types = 120

    def __init__(self, config):
        super().__init__()
        hidden, filters, num_rbf = config.geometry_hidden_size, config.geometry_num_filters, config.geometry_num_rbf
        shared = bool(getattr(config, "geometry_shared_filter_network", False))
        self.output_size = hidden
        self.cutoff = float(config.geometry_cutoff)
        self.pooling = config.geometry_pooling
        self.atom_type_embedding = nn.Embedding(self.num_atom_types, hidden)
        self.atom_feature_encoder = (
            MMSACategoricalEncoder(config.atom_feature_vocab_sizes, hidden) if config.geometry_use_atom_features else None
        )
        self.rbf = MMSAGaussianRBF(self.cutoff, num_rbf)
        self.filter_network = MMSAFilterNetwork(num_rbf, filters) if shared else None
        self.interactions = nn.ModuleList(
            MMSAInteractionBlock(hidden, filters, num_rbf, own_filter_network=not shared)
            for _ in range(config.geometry_num_layers)
        )
        self.output_network = nn.Sequential(nn.Linear(hidden, hidden), MMSAShiftedSoftplus(), nn.Linear(hidden, hidden))

    def embed_atoms(self, atomic_numbers: torch.Tensor, atom_features: torch.Tensor | None) -> torch.Tensor:
        r""":math:`\mathbf{h}^{(0)}`, ``[N, H]``."""
        h = self.atom_type_embedding(atomic_numbers.clamp(min=0, max=self.num_atom_types - 1))
        if self.atom_feature_encoder is not None:
            if atom_features is None:
                raise ValueError("geometry_use_atom_features=True needs `atom_features`")
            h = h + self.atom_feature_encoder(atom_features)
        return h

    def forward(
        self,
        atomic_numbers: torch.Tensor,
        pos: torch.Tensor,
        batch: torch.Tensor,
        ptr: torch.Tensor | None = None,
        atom_features: torch.Tensor | None = None,
        num_graphs: int | None = None,
        **unused,
    ) -> MMSAEncoderOutput:
        num_graphs = infer_num_graphs(batch, ptr, num_graphs)
        h = self.embed_atoms(atomic_numbers, atom_features)
        pairs, distance = atom_pairs_per_molecule(pos.to(h.dtype), batch, self.cutoff, ptr=ptr, num_graphs=num_graphs)
        atoms = self._run_message_passing(h, pairs, distance)
        molecule = pool_atoms(atoms, batch, num_graphs, self.pooling)
        return MMSAEncoderOutput(molecule_embedding=molecule, atom_embeddings=atoms)

    def message_passing(self, h: torch.Tensor, pairs: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        r"""The interaction blocks and the output network on the pair list: ``h`` ``[N, H]``, ``pairs`` long
        ``[2, Q]``, ``distance`` ``[Q]`` -> atom embeddings ``[N, H]``. Its shapes follow the pair list, not the
        data's values, so ``torch.compile`` can trace it whole (see :meth:`compile_message_passing`)."""
        edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)  # as radius_graph_per_molecule: Q pairs, then reversed
        rbf, envelope = self.rbf(distance), cosine_cutoff(distance, self.cutoff)
        shared_filters = self.filter_network.filters(rbf, envelope) if self.filter_network is not None else None
        for interaction in self.interactions:
            h = h + interaction(h, edge_index, rbf, envelope, filters=shared_filters)
        return self.output_network(h)

    #: ``torch.compile`` of :meth:`message_passing`, set by :meth:`compile_message_passing`; ``None``: eager
    compiled_message_passing = None

    def compile_message_passing(self) -> None:
        """Run :meth:`message_passing` through ``torch.compile`` (inductor, dynamic shapes): the same maths, with
        the element-wise work around the gathers, filters and sums fused (issue 10: the 3D branch of a ``small``
        CPU step 13-25 ms faster). The pair list stays eager, since its size depends on the coordinates. The first
        call compiles (seconds; cached by inductor). If compiling fails there (no C++ compiler, say), a warning
        is logged and the encoder runs eagerly from then on."""
        # the function is compiled, not the bound method, and called with the encoder, so a copy of the encoder
        # (copy.deepcopy keeps function objects as they are) runs its own weights
        self.compiled_message_passing = torch.compile(_message_passing_of, dynamic=True)

    def _run_message_passing(self, h, pairs, distance) -> torch.Tensor:
        if self.compiled_message_passing is not None:
            try:
                return self.compiled_message_passing(self, h, pairs, distance)
            except Exception as error:  # noqa: BLE001 - compilation problems surface at the first call
                logger.warning("torch.compile of the 3D encoder failed (%s: %s); running it eagerly.",
                               type(error).__name__, str(error).splitlines()[0] if str(error) else "")
                self.compiled_message_passing = None
        return self.message_passing(h, pairs, distance)
