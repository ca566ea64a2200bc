"""The first DiffPool level: a sparse PyG mini-batch in, a coarsened dense batch out."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from diffpool.functional.diff_pool import SparseCall, pool_sparse, read_sparse_batch
from diffpool.functional.output import DiffPoolOutput
from diffpool.nn.base import DiffPoolBase
from diffpool.nn.encoders import GNNEncoder
from diffpool.utils.validation import as_int64_index, check_edge_attr, explains_input


def _accepts(module: torch.nn.Module | None, argument: str) -> bool:
    if module is None:
        return False
    try:
        return argument in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


class DiffPoolConv(DiffPoolBase):
    r"""The differentiable pooling operator from the `"Hierarchical Graph Representation
    Learning with Differentiable Pooling" <https://arxiv.org/abs/1806.08804>`_ paper, on a
    sparse PyG mini-batch.

    .. math::
        \mathbf{Z} &= \mathrm{GNN}_{\mathrm{embed}}(\mathbf{A}, \mathbf{X}), \qquad
        \mathbf{S} = \mathrm{softmax}(\mathrm{GNN}_{\mathrm{pool}}(\mathbf{A}, \mathbf{X}))

        \mathbf{X}' &= \mathbf{S}^{\top} \mathbf{Z}, \qquad
        \mathbf{A}' = \mathbf{S}^{\top} \mathbf{A} \mathbf{S}

    computed per graph of the batch. :math:`\mathbf{A}\mathbf{S}` is a sparse-dense product,
    except on batches of small graphs, where one dense :math:`B \times N_{\max} \times
    N_{\max}` block is cheaper (see :func:`~diffpool.functional.sparse_diff_pool`). The
    auxiliary losses are computed per graph :math:`g` (padding never counts) and averaged over
    the :math:`B` graphs:

    .. math::
        \mathcal{L}_{LP} &= \frac{1}{B} \sum_g \frac{1}{N_g}
        \|\mathbf{A}_g - \mathbf{S}_g \mathbf{S}_g^{\top}\|_F, \quad
        \|\mathbf{A}_g - \mathbf{S}_g\mathbf{S}_g^\top\|_F^2 = \|\mathbf{A}_g\|_F^2
        - 2\,\mathrm{tr}(\mathbf{S}_g^\top \mathbf{A}_g \mathbf{S}_g)
        + \|\mathbf{S}_g^\top \mathbf{S}_g\|_F^2

        \mathcal{L}_{E} &= \frac{1}{B} \sum_g \frac{1}{N_g} \sum_{i \in g}
        -\sum_c S_{ic} \log S_{ic}

    with ``link_loss="frobenius"`` (the paper). With ``link_loss="bce"`` (what the authors' code
    trains with), :math:`\mathbf{P}_g = \min(\mathbf{S}_g \mathbf{S}_g^{\top}, 1)` and
    :math:`\epsilon = 10^{-7}`:

    .. math::
        \mathcal{L}_{LP} = \frac{1}{B} \sum_g \frac{1}{N_g^2} \sum_{i, j \in g}
        -A_{ij} \log(P_{ij} + \epsilon) - (1 - A_{ij}) \log(1 - P_{ij} + \epsilon),

    evaluated per group of similar-sized graphs, each padded only to its own largest graph and
    narrowed to its clusters, in row blocks recomputed in the backward pass: time is about
    :math:`O(\sum_g N_g^2 C_g)` rather than the padded batch's :math:`O(B N_{\max}^2 C)`, and
    memory stays at one row block. The authors' code divides the batch
    sum by :math:`\sum_g N_g^2` instead, which weighs large graphs more.

    **PyG's normalisation.** :func:`torch_geometric.nn.dense_diff_pool` normalises both losses
    over the padded batch (:math:`B` graphs of :math:`N_{\max}` rows):
    :math:`\mathcal{L}_{LP} = \sqrt{\sum_g \|\mathbf{A}_g - \mathbf{S}_g
    \mathbf{S}_g^{\top}\|_F^2} / (B N_{\max}^2)` and :math:`\mathcal{L}_E` the mean row entropy
    over all :math:`B N_{\max}` rows. For one graph without padding its link loss is the one
    above divided by :math:`N_g` and its entropy the same; on a padded batch the ratio also
    depends on the padding. ``loss_normalization="pyg"`` gives PyG's values (of the batch
    padded to ``max_num_nodes``), so that a PyG model's ``link_loss_coef`` and
    ``entropy_loss_coef`` carry over; ``"pyg_unnormalized"`` is its ``normalize=False``.

    **Cluster budgets.** With ``ratio=None`` (the default, the paper's rule) every graph is
    pooled into ``num_clusters`` clusters :math:`C`. With a ``ratio``, graph :math:`g` gets
    :math:`C_g = \min(C, \lceil \mathrm{ratio} \cdot N_g \rceil)` clusters: its softmax runs
    over the first :math:`C_g` outputs of :math:`\mathrm{GNN}_{\mathrm{pool}}` only, the other
    slots are exactly zero in ``s``, ``x`` and ``adj``, and the output has
    :math:`\min(C, \lceil \mathrm{ratio} \cdot N_{\max} \rceil)` slots instead of :math:`C`.
    This is what makes large graphs cheap: the :math:`C^2` terms then scale with the batch's
    graphs, not with the dataset's largest graph. With a ``head`` (a linear map from the
    pooling GNN's output to the :math:`C` logits, as :meth:`from_encoder` builds with
    ``concat=True``), only the first :math:`C_g` logits of each group of similar-sized graphs
    are computed, not all :math:`C` for every node.

    The computation itself is :func:`diffpool.functional.sparse_diff_pool`: call it to pool
    embeddings and logits you already have.

    Args:
        embed (torch.nn.Module): :math:`\mathrm{GNN}_{\mathrm{embed}}`, any PyG message-passing
            module or stack called as ``embed(x, edge_index)`` (``edge_weight`` is passed too
            when given and its ``forward`` takes one), returning ``[N, F']``.
        pool (torch.nn.Module): :math:`\mathrm{GNN}_{\mathrm{pool}}`, called the same way,
            returning ``[N, num_clusters]`` logits.
        num_clusters (int): The number of clusters :math:`C` (the cap with a ``ratio``).
        ratio (float, optional): If set, per-graph budgets
            :math:`\lceil \mathrm{ratio} \cdot N_g \rceil`. (default: :obj:`None`)
        link_loss (str, optional): ``"frobenius"``, ``"bce"`` or ``"none"``.
            (default: :obj:`"frobenius"`)
        link_loss_coef (float, optional): Weight of the link loss in ``aux_loss``.
            (default: :obj:`1.0`)
        entropy_loss (bool, optional): Whether to compute the entropy loss.
            (default: :obj:`True`)
        entropy_loss_coef (float, optional): Weight of the entropy loss in ``aux_loss``.
            (default: :obj:`1.0`)
        validate (bool, optional): Check the inputs and raise a clear error on bad input. The
            checks synchronise with the device; they are skipped under ``torch.compile``.
            (default: :obj:`True`)
        head (torch.nn.Linear, optional): A linear map from ``pool``'s output to the
            ``num_clusters`` logits, applied by the layer only to the cluster slots each group
            of graphs uses. (default: :obj:`None`: ``pool`` returns the logits)
        loss_normalization (str, optional): ``"per_graph"`` (the losses above), ``"pyg"`` or
            ``"pyg_unnormalized"`` (PyG's, see above; with ``link_loss="frobenius"`` or
            ``"none"``). (default: :obj:`"per_graph"`)
        pool_on (str, optional): What ``pool`` reads: ``"input"``, the input graph (called as
            ``pool(x, edge_index)``, the paper), or ``"embedding"``, the embeddings
            :math:`\mathbf{Z}` (called as ``pool(z)``; e.g. a :class:`torch.nn.Linear`, whose
            logits are then computed only for the slots used):
            :math:`\mathbf{S} = \mathrm{softmax}(\mathrm{MLP}(\mathbf{Z}))`, the
            assignment of torch-geometric-pool's DiffPool, with no pooling GNN.
            (default: :obj:`"input"`)
    """

    encoder_class = GNNEncoder

    def __init__(
        self,
        embed: torch.nn.Module,
        pool: torch.nn.Module | None,
        num_clusters: int,
        ratio: float | None = None,
        link_loss: str = "frobenius",
        link_loss_coef: float = 1.0,
        entropy_loss: bool = True,
        entropy_loss_coef: float = 1.0,
        validate: bool = True,
        *,
        head: torch.nn.Linear | None = None,
        loss_normalization: str = "per_graph",
        pool_on: str = "input",
    ):
        super().__init__(
            embed,
            pool,
            num_clusters,
            ratio,
            link_loss,
            link_loss_coef,
            entropy_loss,
            entropy_loss_coef,
            validate,
            head=head,
            loss_normalization=loss_normalization,
            pool_on=pool_on,
        )
        self._embed_args = {a for a in ("edge_weight", "edge_attr") if _accepts(embed, a)}
        self._pool_args = set()
        if self.pool_on == "input":
            self._pool_args = {a for a in ("edge_weight", "edge_attr") if _accepts(pool, a)}

    @staticmethod
    def _run(gnn, accepted: set, x: Tensor, edge_index, **edges):
        given = {k: v for k, v in edges.items() if v is not None and k in accepted}
        return gnn(x, edge_index, **given)

    def forward(
        self,
        x: Tensor,
        edge_index,
        batch: Tensor | None = None,
        edge_weight: Tensor | None = None,
        *,
        batch_size: int | None = None,
        max_num_nodes: int | None = None,
        assignment: Tensor | None = None,
        return_assignment: bool = True,
        edge_attr: Tensor | None = None,
        layout: str = "auto",
    ) -> DiffPoolOutput:
        r"""Pool a sparse mini-batch.

        Args:
            x (torch.Tensor): Node features :math:`\mathbf{X} \in \mathbb{R}^{N \times F}`.
            edge_index (torch.Tensor or SparseTensor): ``[2, E]`` edge indices, a
                ``torch_sparse.SparseTensor`` or a ``torch.sparse`` ``[N, N]`` matrix (both in
                PyG's ``adj_t`` convention: entry ``[i, j]`` is the edge :math:`j \to i`).
                An int32 ``edge_index`` (valid in PyG) is taken as int64.
            batch (torch.Tensor, optional): ``[N]`` sorted graph index of every node;
                :obj:`None` for a single graph. (default: :obj:`None`)
            edge_weight (torch.Tensor, optional): ``[E]`` edge weights for ``edge_index``.
                Duplicate edges add up. (default: :obj:`None`)
            batch_size (int, optional): The number of graphs :math:`B`; pass it (and
                ``max_num_nodes``) for static shapes. (default: :obj:`None`)
            max_num_nodes (int, optional): :math:`N_{\max}`, the padded size of ``s``.
                (default: :obj:`None`)
            assignment (torch.Tensor, optional): ``[N]`` hard cluster id of every node (e.g.
                from a graph clustering, as in DiffPool-Det). :math:`\mathbf{S}` is then its
                one-hot matrix, ``pool`` is not called, the entropy is zero and
                ``cluster_mask`` marks the clusters that hold at least one node.
                (default: :obj:`None`)
            return_assignment (bool, optional): If set to :obj:`False`, the output's ``s`` is
                :obj:`None`: the dense ``[B, N_max, C]`` assignment is then never built (it is
                the largest tensor of a batch with one large graph, and no loss needs it).
                Training loops that do not read ``s`` should pass
                :obj:`False`. (default: :obj:`True`)
            edge_attr (torch.Tensor, optional): ``[E, D]`` edge features, given to the GNNs
                whose ``forward`` takes ``edge_attr`` (e.g. an encoder of type ``"gine"``).
                The coarsened graph has none: :math:`\mathbf{A}'` pools the connectivity
                (and ``edge_weight``) only. (default: :obj:`None`)
            layout (str, optional): How the pooling products are laid out: ``"auto"`` (the
                planner chooses from the batch's sizes), ``"padded"``, ``"sparse"`` or
                ``"per_bucket"`` (see
                :func:`~diffpool.functional.sparse_diff_pool`). (default: :obj:`"auto"`)

        Returns:
            DiffPoolOutput: ``x`` ``[B, C, F']``, ``adj`` ``[B, C, C]``, ``s``
            ``[B, N_max, C]`` (or :obj:`None`), ``mask`` ``[B, N_max]``, ``cluster_mask``
            ``[B, C]`` and the losses.
        """
        run = SparseCall(batch_size, max_num_nodes, return_assignment, True, layout)
        return self._pool(x, edge_index, batch, edge_weight, edge_attr, assignment, run)[0]

    @explains_input(lambda layer: getattr(layer.embed, "in_channels", None))
    def _pool(self, x, edge_index, batch, edge_weight, edge_attr, assignment, run: SparseCall):
        """:meth:`forward` with its run options gathered (``run.factored``: for
        :class:`~diffpool.models.DiffPoolNet`'s own dense levels only); also returns the nodes of
        every graph on the host (:obj:`None` under ``torch.compile``).

        The inputs' values are checked and the batch's sizes read in one transfer from the
        device, before the GNNs run (:func:`~diffpool.functional.diff_pool.read_sparse_batch`):
        validation costs no synchronisation of its own."""
        validating = self._validating() and run.validate
        batch, counts, host = read_sparse_batch(
            x, edge_index, edge_weight, batch, run.batch_size, validating, finite_x=True
        )
        if validating:
            check_edge_attr(edge_attr, edge_index)
        # int32 indices (valid in PyG) as int64, which torch's scatter needs on some paths
        edge_index = as_int64_index(edge_index)
        edges = dict(edge_weight=edge_weight, edge_attr=edge_attr)
        z = self._run(self.embed, self._embed_args, x, edge_index, **edges)
        fold = getattr(self.pool, "fold_head", None)
        s = self._assignment(
            lambda: self._run(self.pool, self._pool_args, x, edge_index, **edges),
            assignment,
            fold and (lambda: self._run(fold, self._pool_args, x, edge_index, **edges)),
            z,
        )
        run = run._replace(validate=validating, counts=(counts, host))
        out = pool_sparse(z, edge_index, s, batch, edge_weight, self._options(), run)
        return out, host
