"""What the sparse and the dense DiffPool levels share: options, budgets, losses, output."""

from __future__ import annotations

import torch
from torch_geometric.nn.inits import reset

from diffpool.functional.diff_pool import AssignmentHead, PoolOptions, check_loss_options
from diffpool.utils.validation import check_coefficient, check_num_clusters, check_ratio

#: What the pooling module reads: ``"input"``, the level's input graph (:math:`\mathbf{S} =
#: \mathrm{softmax}(\mathrm{GNN}_{\mathrm{pool}}(\mathbf{A}, \mathbf{X}))`, the paper), or
#: ``"embedding"``, the embedding GNN's output (:math:`\mathbf{S} = \mathrm{softmax}(
#: \mathrm{MLP}(\mathbf{Z}))`, no pooling GNN: torch-geometric-pool's DiffPool and many later
#: papers).
POOL_INPUTS = ("input", "embedding")

#: The pooling module :meth:`DiffPoolBase.from_encoder` builds: ``"gnn"`` (a GNN on the input
#: graph) or ``"mlp"`` (a linear map of the embeddings, ``pool_on="embedding"``).
POOL_NETS = ("gnn", "mlp")


class DiffPoolBase(torch.nn.Module):
    """Options and weights common to :class:`DiffPoolConv` and :class:`DenseDiffPoolConv`: the
    two GNNs, an optional assignment head, and the options they pass to the functional core
    (:mod:`diffpool.functional.diff_pool`)."""

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
        super().__init__()
        if pool_on not in POOL_INPUTS:
            raise ValueError(f"pool_on must be one of {POOL_INPUTS}, got {pool_on!r}")
        if pool_on == "embedding" and head is not None:
            raise ValueError("pool_on='embedding' maps the embeddings itself: give no head")
        for name, module in (("embed", embed), ("pool", pool)):
            if module is None and name == "pool":
                continue  # assignments given at every call (e.g. DiffPool-Det)
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        check_loss_options(link_loss, loss_normalization)
        self.num_clusters = check_num_clusters(num_clusters)
        if head is not None:
            if not isinstance(head, torch.nn.Linear):
                raise TypeError(f"head must be a torch.nn.Linear, got {type(head).__name__}")
            if head.out_features != self.num_clusters:
                raise ValueError(
                    f"head maps to {head.out_features} outputs but num_clusters="
                    f"{self.num_clusters}: its output size must equal the number of clusters"
                )
            if pool is None:
                raise ValueError("head needs a pooling GNN (pool) whose output it maps")
        self.embed = embed
        self.pool = pool
        self.head = head
        self.pool_on = pool_on
        self.ratio = check_ratio(ratio)
        self.link_loss = link_loss
        self.loss_normalization = loss_normalization
        self.link_loss_coef = check_coefficient("link_loss_coef", link_loss_coef)
        self.entropy_loss = bool(entropy_loss)
        self.entropy_loss_coef = check_coefficient("entropy_loss_coef", entropy_loss_coef)
        self.validate = bool(validate)
        self.reset_parameters()

    #: The encoder stack that :meth:`from_encoder` builds (sparse or dense).
    encoder_class: type[torch.nn.Module]

    @classmethod
    def from_encoder(
        cls,
        encoder: str,
        in_channels: int,
        hidden_channels: int,
        num_clusters: int,
        num_layers: int = 2,
        dropout: float = 0.0,
        *,
        norm: str | None = None,
        concat: bool = False,
        normalize: bool = False,
        pool: bool = True,
        edge_dim: int | None = None,
        pool_net: str = "gnn",
        **kwargs,
    ):
        r"""Build the layer with registered encoder stacks for both GNNs.

        Args:
            encoder (str): A registered encoder type (``"sage"``, ``"gcn"``, ``"gin"``,
                ``"gat"``, ``"sum"``, or your own, see :func:`~diffpool.nn.register_encoder`).
            in_channels (int): Size of each input node feature.
            hidden_channels (int): Hidden size of both GNNs and size of the embedding GNN's
                last layer.
            num_clusters (int): The number of clusters :math:`C`.
            num_layers (int, optional): Layers per GNN. (default: :obj:`2`)
            dropout (float, optional): Dropout between layers. (default: :obj:`0.0`)
            norm (str, optional): ``"batch"`` for batch norm between layers.
                (default: :obj:`None`)
            concat (bool, optional): The embedding :math:`\mathbf{Z}` is the concatenation of
                all layers' outputs (width ``num_layers * hidden_channels``, see
                ``self.embed.out_channels``), and the concatenation of the pooling GNN's layers
                is mapped to ``num_clusters`` logits by a linear ``head`` (the authors' code).
                (default: :obj:`False`)
            normalize (bool, optional): L2-normalise every layer's output (GraphSAGE's option;
                in the pooling GNN only before its final linear map). (default: :obj:`False`)
            pool (bool, optional): Build the pooling GNN; :obj:`False` for a layer that is
                always given its ``assignment`` (DiffPool-Det). (default: :obj:`True`)
            edge_dim (int, optional): Edge feature width, for the sparse layer with an
                encoder type that takes edge features (``"gine"``, ``"gat"``).
                (default: :obj:`None`)
            pool_net (str, optional): ``"gnn"``: the pooling GNN above (the paper);
                ``"mlp"``: :math:`\mathbf{S} = \mathrm{softmax}(\mathbf{Z}\mathbf{W}^\top +
                \mathbf{b})`, a :class:`torch.nn.Linear` on the embeddings
                (``pool_on="embedding"``, torch-geometric-pool's DiffPool), whose logits are
                computed only for the cluster slots each group of graphs uses.
                (default: :obj:`"gnn"`)
            **kwargs (optional): The layer's other arguments (``ratio``, ``link_loss``,
                ``loss_normalization``, ...).
        """
        check_num_clusters(num_clusters)  # before the encoders are built with it
        common = dict(num_layers=num_layers, dropout=dropout, norm=norm, concat=concat)
        if edge_dim is not None:
            common["edge_dim"] = edge_dim
        embed = cls.encoder_class(
            encoder, in_channels, hidden_channels, hidden_channels, normalize=normalize, **common
        )
        if pool_net not in POOL_NETS:
            raise ValueError(f"pool_net must be one of {POOL_NETS}, got {pool_net!r}")
        pool_gnn = head = None
        if pool and pool_net == "mlp":
            linear = torch.nn.Linear(embed.out_channels, num_clusters)
            return cls(embed, linear, num_clusters, pool_on="embedding", **kwargs)
        if pool:
            pool_gnn = cls.encoder_class(
                encoder,
                in_channels,
                hidden_channels,
                num_clusters,
                normalize=normalize and concat,
                **common,
            )
            if concat:  # the concatenation of the layers, mapped to the logits by the head
                head = torch.nn.Linear(pool_gnn.out_channels, num_clusters)
        return cls(embed, pool_gnn, num_clusters, head=head, **kwargs)

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""
        for module in (self.embed, self.pool, self.head):
            if module is not None:
                reset(module)

    def _validating(self) -> bool:
        return self.validate and not torch.compiler.is_compiling()

    def _assignment(self, pooled, assignment, fold=None, z=None):
        """What the functional core takes as ``s``: hard cluster ids, the pooling GNN's logits,
        or its features with the head's map. ``fold()``: the pooling GNN's
        :meth:`~diffpool.nn.GNNEncoder.fold_head` (features and the ``fold`` of its last
        layer, or :obj:`None` where that does not apply)."""
        if assignment is not None:
            if not isinstance(assignment, torch.Tensor) or assignment.is_floating_point():
                what = getattr(assignment, "dtype", type(assignment).__name__)
                raise TypeError(f"assignment must hold integer cluster ids, got {what}")
            return assignment
        if self.pool is None:
            raise ValueError(
                "this layer has no pooling GNN (pool=None): pass the cluster assignment"
            )
        if self.pool_on == "embedding":  # S = softmax(pool(Z))
            if isinstance(self.pool, torch.nn.Linear):  # logits only for the slots used
                return AssignmentHead(z, self.pool.weight, self.pool.bias)
            return self.pool(z)
        if self.head is None:
            return pooled()
        folded = fold() if fold is not None else None
        features, basis = folded if folded is not None else (pooled(), None)
        return AssignmentHead(features, self.head.weight, self.head.bias, basis)

    def _options(self) -> PoolOptions:
        """The layer's options, as the functional core takes them."""
        return PoolOptions(
            num_clusters=self.num_clusters,
            ratio=self.ratio,
            link_loss=self.link_loss,
            entropy_loss=self.entropy_loss,
            link_loss_coef=self.link_loss_coef,
            entropy_loss_coef=self.entropy_loss_coef,
            loss_normalization=self.loss_normalization,
        )

    def __repr__(self) -> str:
        def short(module: torch.nn.Module) -> str:
            text = repr(module)
            return text if "\n" not in text else type(module).__name__

        parts = [
            f"embed={short(self.embed)}",
            f"pool={short(self.pool)}",
        ]
        if self.head is not None:
            parts.append(f"head={self.head}")
        if self.pool_on != "input":
            parts.append(f"pool_on='{self.pool_on}'")
        parts.append(f"num_clusters={self.num_clusters}")
        if self.ratio is not None:
            parts.append(f"ratio={self.ratio}")
        parts.append(f"link_loss='{self.link_loss}'")
        if not self.entropy_loss:
            parts.append("entropy_loss=False")
        if self.loss_normalization != "per_graph":
            parts.append(f"loss_normalization='{self.loss_normalization}'")
        return f"{type(self).__name__}({', '.join(parts)})"
