"""What the sparse and the dense DiffPool levels share: options, budgets, losses, output."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch_geometric.nn.inits import reset

from diffpool.functional.assignment import (
    cluster_budget,
    cluster_budgets,
    cluster_mask_from_budgets,
)
from diffpool.functional.losses import frobenius_link_loss_sq, safe_sqrt
from diffpool.nn.output import DiffPoolOutput
from diffpool.utils.validation import check_coefficient, check_num_clusters, check_ratio

LINK_LOSSES = ("frobenius", "bce", "none")


class DiffPoolBase(torch.nn.Module):
    """Options and computations common to :class:`DiffPoolConv` and :class:`DenseDiffPoolConv`."""

    def __init__(
        self,
        embed: torch.nn.Module,
        pool: torch.nn.Module,
        num_clusters: int,
        ratio: float | None = None,
        link_loss: str = "frobenius",
        link_loss_coef: float = 1.0,
        entropy_loss: bool = True,
        entropy_loss_coef: float = 1.0,
        validate: bool = True,
    ):
        super().__init__()
        for name, module in (("embed", embed), ("pool", pool)):
            if module is None and name == "pool":
                continue  # assignments given at every call (e.g. DiffPool-Det)
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        if link_loss not in LINK_LOSSES:
            raise ValueError(f"link_loss must be one of {LINK_LOSSES}, got {link_loss!r}")
        self.embed = embed
        self.pool = pool
        self.num_clusters = check_num_clusters(num_clusters)
        self.ratio = check_ratio(ratio)
        self.link_loss = link_loss
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
                ``self.embed.out_channels``), and the pooling GNN maps the concatenation of
                its layers to ``num_clusters`` logits with a linear layer (the authors' code).
                (default: :obj:`False`)
            normalize (bool, optional): L2-normalise every layer's output (GraphSAGE's option;
                in the pooling GNN only before its final linear map). (default: :obj:`False`)
            pool (bool, optional): Build the pooling GNN; :obj:`False` for a layer that is
                always given its ``assignment`` (DiffPool-Det). (default: :obj:`True`)
            **kwargs (optional): The layer's other arguments (``ratio``, ``link_loss``, ...).
        """
        common = dict(num_layers=num_layers, dropout=dropout, norm=norm, concat=concat)
        embed = cls.encoder_class(
            encoder, in_channels, hidden_channels, hidden_channels, normalize=normalize, **common
        )
        pool_gnn = None
        if pool:
            pool_gnn = cls.encoder_class(
                encoder,
                in_channels,
                hidden_channels,
                num_clusters,
                normalize=normalize and concat,
                lin=concat,
                **common,
            )
        return cls(embed, pool_gnn, num_clusters, **kwargs)

    def reset_parameters(self):
        r"""Resets all learnable parameters of the module."""
        reset(self.embed)
        if self.pool is not None:
            reset(self.pool)

    def _validating(self) -> bool:
        return self.validate and not torch.compiler.is_compiling()

    def _num_slots(self, max_num_nodes: int) -> int:
        """Cluster slots in the output: ``C``, or the largest per-graph budget possible."""
        if self.ratio is None:
            return self.num_clusters
        return min(self.num_clusters, cluster_budget(max_num_nodes, self.ratio))

    def _cluster_mask(self, num_nodes: Tensor, num_slots: int) -> Tensor | None:
        """``[B, slots]`` mask of each graph's clusters, or None when every slot is used."""
        if self.ratio is None:
            return None
        budgets = cluster_budgets(num_nodes, self.ratio, self.num_clusters)
        return cluster_mask_from_budgets(budgets, num_slots)

    def _fixed_assignment(
        self, assignment: Tensor, num_slots: int, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        r"""One-hot :math:`\mathbf{S}` from hard cluster ids and its (zero) entropy."""
        s = torch.nn.functional.one_hot(assignment.long(), num_slots).to(dtype)
        return s, s.new_zeros(s.shape[:-1])

    def _check_pool(self, assignment: Tensor | None) -> None:
        if assignment is None and self.pool is None:
            raise ValueError(
                "this layer has no pooling GNN (pool=None): pass the cluster assignment"
            )

    def _check_logits(self, logits: Tensor) -> None:
        self._check_pool_channels(logits.size(-1))

    def _check_pool_channels(self, channels: int) -> None:
        if channels != self.num_clusters:
            raise ValueError(
                f"the pooling GNN returns {channels} channels per node but num_clusters="
                f"{self.num_clusters}: its output size must equal the number of clusters"
            )

    def _output(
        self,
        x: Tensor,
        adj: Tensor,
        s: Tensor | None,
        mask: Tensor,
        cluster_mask: Tensor | None,
        entropy_sum: Tensor,
        adj_sq_norm: Callable[[], Tensor],
        trace: Callable[[], Tensor],
        gram_sq_norm: Callable[[], Tensor],
        bce_sum: Callable[[], Tensor],
        z: Tensor,
        loss_dtype: torch.dtype,
    ) -> DiffPoolOutput:
        r"""Assemble the output from the pooled ``x`` [B, C, F'] and ``adj`` [B, C, C], the
        dense ``s`` [B, N, C] (or :obj:`None` when it is not to be returned) with the node
        ``mask`` [B, N] and the per-graph entropy sums; the callables give per-graph
        :math:`\|\mathbf{A}_g\|_F^2`,
        :math:`\mathrm{tr}(\mathbf{S}_g^\top\mathbf{A}_g\mathbf{S}_g)`,
        :math:`\|\mathbf{S}_g^\top\mathbf{S}_g\|_F^2` and BCE sums, so that only the chosen
        loss is computed. The losses are computed in ``loss_dtype`` (that of
        :math:`\mathbf{S}`)."""
        batch_size, num_slots = x.shape[:2]
        if cluster_mask is None:
            cluster_mask = torch.ones(batch_size, num_slots, dtype=torch.bool, device=x.device)
        # Losses in float32 or wider, also under autocast: the Frobenius identity subtracts
        # large terms and would lose all precision in bf16.
        with torch.autocast(device_type=x.device.type, enabled=False):
            num_nodes = mask.sum(-1).clamp(min=1).to(loss_dtype)
            zero = num_nodes.new_zeros(batch_size)
            entropy_per_graph = entropy_sum / num_nodes if self.entropy_loss else zero
            if self.link_loss == "frobenius":
                sq = frobenius_link_loss_sq(adj_sq_norm().to(loss_dtype), trace(), gram_sq_norm())
                link_per_graph = safe_sqrt(sq) / num_nodes
            elif self.link_loss == "bce":
                link_per_graph = bce_sum() / num_nodes.pow(2)
            else:
                link_per_graph = zero
        link = link_per_graph.mean()
        ent = entropy_per_graph.mean()
        aux = self.link_loss_coef * link + self.entropy_loss_coef * ent
        return DiffPoolOutput(
            x=x,
            adj=adj,
            s=s,
            mask=mask,
            cluster_mask=cluster_mask,
            link_loss=link,
            entropy_loss=ent,
            aux_loss=aux,
            link_loss_per_graph=link_per_graph,
            entropy_loss_per_graph=entropy_per_graph,
            z=z,
        )

    def __repr__(self) -> str:
        def short(module: torch.nn.Module) -> str:
            text = repr(module)
            return text if "\n" not in text else type(module).__name__

        parts = [
            f"embed={short(self.embed)}",
            f"pool={short(self.pool)}",
            f"num_clusters={self.num_clusters}",
        ]
        if self.ratio is not None:
            parts.append(f"ratio={self.ratio}")
        parts.append(f"link_loss='{self.link_loss}'")
        if not self.entropy_loss:
            parts.append("entropy_loss=False")
        return f"{type(self).__name__}({', '.join(parts)})"
