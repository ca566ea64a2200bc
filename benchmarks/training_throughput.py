"""Seconds per training epoch and peak memory of the full training step, side by side in one run.

Same architecture for every formulation: GraphSAGE blocks of 3 layers (64 channels, batch
norm, the layers' outputs concatenated), 2 pooling levels at ratio 0.25, batch of 20 graphs,
Adam; a training step is forward, cross-entropy + auxiliary losses, backward and the
optimizer step, and an epoch is every graph of the dataset once (shuffled).

* ``ours_fixed``: :class:`diffpool.models.DiffPoolNet` on sparse PyG batches, C = ceil(0.25 *
  the dataset's largest graph) clusters for every graph (the paper's rule);
* ``ours_per_graph``: the same with per-graph budgets ceil(0.25 * N_g) (cap C);
* ``dense_pyg``: the formulation of PyG's ``examples/proteins_diff_pool.py``, on all graphs:
  ``ToDense`` to the dataset's largest graph, ``DenseDataLoader``, ``DenseSAGEConv`` blocks and
  ``dense_diff_pool`` (the example keeps only graphs of <= 150 nodes; here none is dropped);
* ``tgp_batched``, ``tgp_unbatched``: torch-geometric-pool's ``DiffPool`` at both levels (raw
  A': ``remove_self_loops=False, degree_norm=False``), the first level in its batched (dense,
  padded to the batch) or unbatched (a loop over graphs) mode, with our encoder blocks. Its
  assignment is an MLP select on the embeddings (how tgp defines DiffPool): there is no
  pooling GNN, so its step does less work than ours and PyG's (3 SAGE layers per level
  fewer). Needs ``pip install --no-build-isolation torch-geometric-pool``;
* ``flat``: the ``base`` model, the same encoder block and a mean readout without pooling:
  what any model pays for the message passing. The table gives every pooling formulation's
  time as a multiple of it (the cost of the pooling on top of it).

Our formulations train with the paper's Frobenius link loss, as ``dense_diff_pool`` does;
``--link-loss bce`` times them with the authors' BCE link loss instead (ours only: PyG's
dense formulation has no BCE).

Each measurement runs ``--repeats`` times (3), the formulations alternating so that a drift of
this shared machine hits them alike, and the table takes medians; a measurement whose first run
took over ``--repeat-below`` seconds (120) runs once. On CPU an epoch can take more than the
time budget (D&D densified: about 90 minutes): then the first ``--max-batches`` batches are
timed and the epoch time is extrapolated from their mean (``measured batches`` in the table
says so). Peak memory is measured over the timed batches
(see ``benchmarks/measure.py``).

    python benchmarks/training_throughput.py  # MUTAG ENZYMES PROTEINS COLLAB DD, N_max 50-800
    python benchmarks/training_throughput.py --quick  # ENZYMES and N_max 50, 5 batches, 1 run
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

from measure import (
    ARCHITECTURES,
    COMPILED,
    Deadline,
    Formulation,
    add_common_arguments,
    architecture_note,
    as_trained,
    available_formulations,
    base_name,
    best_peers,
    code_description,
    compile_cases,
    compile_module,
    compiled_step_begin,
    count_host_syncs,
    fmt_bytes,
    machine_description,
    peak_since,
    python,
    ratio_cell,
    reset_peak,
    run_architecture,
    scaling_plot,
    source_hash,
    steady_malloc,
    sync_note,
    tu_available,
    tu_dataset,
)

HERE = Path(__file__).resolve().parent
#: Every formulation, its architecture (``measure.ARCHITECTURES``) and role: ours are timed
#: against the peers of their own architecture: ours with a pooling GNN against PyG's dense
#: formulation, ours with the MLP assignment (``pool_net="mlp"``) against tgp's. An entry: a name
#: starting with ``ours``, its architecture, its budget and ``build_model``'s keyword arguments
#: in ``options``.
FORMULATIONS = {
    "ours_fixed": Formulation("gnn_pool", "ours", budget="fixed"),
    "ours_per_graph": Formulation("gnn_pool", "ours", budget="per_graph"),
    "ours_mlp_fixed": Formulation("mlp", "ours", budget="fixed", options=(("pool_net", "mlp"),)),
    "ours_mlp_per_graph": Formulation(
        "mlp", "ours", budget="per_graph", options=(("pool_net", "mlp"),)
    ),
    "dense_pyg": Formulation("gnn_pool", "peer"),
    "tgp_batched": Formulation("mlp", "peer"),
    "tgp_unbatched": Formulation("mlp", "peer"),
    "flat": Formulation("none", "base"),
}
REAL = ("MUTAG", "ENZYMES", "PROTEINS", "COLLAB", "DD")
SCALING = (50, 100, 200, 400, 800)
HIDDEN, LAYERS, LEVELS, RATIO, BATCH = 64, 3, 2, 0.25, 20


# --------------------------------------------------------------------------- the dense reference
def dense_reference(in_channels: int, num_classes: int, max_nodes: int):
    """PyG's dense DiffPool example network, written out: per level a pooling and an embedding
    block of 3 ``DenseSAGEConv`` layers with batch norm over all rows (padding included, as
    there), outputs concatenated; the pooling block ends in a linear map to the clusters."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import DenseSAGEConv, dense_diff_pool

    class Block(torch.nn.Module):
        def __init__(self, cin, hidden, cout, lin):
            super().__init__()
            sizes = [cin, hidden, hidden, cout]
            self.convs = torch.nn.ModuleList(
                DenseSAGEConv(a, b) for a, b in zip(sizes[:-1], sizes[1:])
            )
            self.norms = torch.nn.ModuleList(torch.nn.BatchNorm1d(b) for b in sizes[1:])
            self.lin = torch.nn.Linear(2 * hidden + cout, cout) if lin else None

        def forward(self, x, adj, mask=None):
            outs = []
            for conv, norm in zip(self.convs, self.norms):
                x = F.relu(conv(x, adj, mask))
                x = norm(x.flatten(0, 1)).view_as(x)
                outs.append(x)
            x = torch.cat(outs, dim=-1)
            return F.relu(self.lin(x)) if self.lin is not None else x

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            c1 = math.ceil(RATIO * max_nodes)
            c2 = math.ceil(RATIO * c1)
            self.pool1 = Block(in_channels, HIDDEN, c1, lin=True)
            self.embed1 = Block(in_channels, HIDDEN, HIDDEN, lin=False)
            self.pool2 = Block(3 * HIDDEN, HIDDEN, c2, lin=True)
            self.embed2 = Block(3 * HIDDEN, HIDDEN, HIDDEN, lin=False)
            self.embed3 = Block(3 * HIDDEN, HIDDEN, HIDDEN, lin=False)
            self.lin1 = torch.nn.Linear(3 * HIDDEN, HIDDEN)
            self.lin2 = torch.nn.Linear(HIDDEN, num_classes)

        def forward(self, x, adj, mask):
            s, x = self.pool1(x, adj, mask), self.embed1(x, adj, mask)
            x, adj, link1, ent1 = dense_diff_pool(x, adj, s, mask)
            s, x = self.pool2(x, adj), self.embed2(x, adj)
            x, adj, link2, ent2 = dense_diff_pool(x, adj, s)
            x = self.embed3(x, adj).mean(dim=1)
            return self.lin2(F.relu(self.lin1(x))), link1 + link2 + ent1 + ent2

    return Net()


def _without_edge_attr(data):
    if "edge_attr" in data:
        data = data.clone()
        del data.edge_attr
    return data


def tgp_reference(in_channels: int, num_classes: int, max_nodes: int, batched: bool):
    """Our encoder blocks around torch-geometric-pool's ``DiffPool`` at both levels (the first
    batched or not, the second on its dense output), readouts and MLP as ours."""
    import torch
    from tgp.poolers import DiffPool
    from torch_geometric.nn import global_max_pool
    from torch_geometric.nn.models import MLP

    from diffpool.nn import DenseGNNEncoder, GNNEncoder

    block = dict(num_layers=LAYERS, norm="batch", concat=True)
    raw = dict(remove_self_loops=False, degree_norm=False)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            c1 = math.ceil(RATIO * max_nodes)
            c2 = math.ceil(RATIO * c1)
            self.embed1 = GNNEncoder("sage", in_channels, HIDDEN, HIDDEN, **block)
            width = self.embed1.out_channels
            self.pool1 = DiffPool(width, c1, batched=batched, **raw)
            self.embed2 = DenseGNNEncoder("sage", width, HIDDEN, HIDDEN, **block)
            self.pool2 = DiffPool(width, c2, batched=True, **raw)
            self.embed3 = DenseGNNEncoder("sage", width, HIDDEN, HIDDEN, **block)
            self.mlp = MLP([3 * width, 50, num_classes], norm=None)

        def forward(self, x, edge_index, batch, batch_size):
            z = self.embed1(x, edge_index)
            readouts = [global_max_pool(z, batch, batch_size)]
            first = self.pool1(x=z, adj=edge_index, batch=batch)
            z = self.embed2(first.x, first.edge_index)
            readouts.append(z.max(1).values)
            second = self.pool2(x=z, adj=first.edge_index)
            z = self.embed3(second.x, second.edge_index)
            readouts.append(z.max(1).values)
            aux = sum(first.loss.values()) + sum(second.loss.values())
            return self.mlp(torch.cat(readouts, -1)), aux

    return Net()


# --------------------------------------------------------------------------- worker side
class PhaseClock:
    """Where a training step's time goes: module hooks time the encoders (every GNN block)
    and the pooling levels inside the forward pass; laps time loading, forward + loss,
    backward and the optimizer step. Pooling = levels - their encoders; the rest of the
    forward pass (readout, MLP, cross-entropy) is ``other_forward``."""

    def __init__(self, device):
        import collections

        self.device = device
        self.enabled = True  # off: the hooks and laps do nothing (no synchronisation)
        self.totals = collections.defaultdict(float)
        self._start: dict[int, float] = {}
        self._lap = time.perf_counter()

    def _sync(self):
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize()

    def time(self, module, category: str) -> None:
        def pre(mod, args):
            if not self.enabled:
                return
            self._sync()
            self._start[id(mod)] = time.perf_counter()

        def post(mod, args, out):
            if not self.enabled or id(mod) not in self._start:
                return
            self._sync()
            self.totals[category] += time.perf_counter() - self._start.pop(id(mod))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def lap(self, name: str | None) -> None:
        if not self.enabled:
            return
        self._sync()
        now = time.perf_counter()
        if name is not None:
            self.totals[name] += now - self._lap
        self._lap = now

    def phases(self) -> dict[str, float]:
        t = self.totals
        in_levels = t.get("level_encoders", 0.0)
        encoders = t.get("encoders", 0.0) + in_levels + t.get("final_encoder", 0.0)
        if "levels" in t:  # ours: a level's time minus its GNNs is the pooling itself
            pooling = t["levels"] - in_levels
        else:  # dense: the forward pass minus the GNN blocks is densified pooling + readout
            pooling = t.get("forward", 0.0) - encoders
        forward = t.get("forward_and_loss", 0.0)
        return dict(
            loading=t.get("loading", 0.0),
            encoders=encoders,
            pooling=pooling,
            other_forward=forward - encoders - pooling,
            backward=t.get("backward", 0.0),
            optimizer=t.get("optimizer", 0.0),
        )


def _dataset(case: dict, cache: Path):
    import torch
    from torch_geometric.data import Batch, Data
    from torch_geometric.utils import to_undirected

    if case["kind"] == "real":
        return tu_dataset(case["name"], case["tu_dir"], cache)
    # synthetic: 200 graphs of N_max/4..N_max nodes, average degree ~5, 16 features, 2 classes
    n_max = case["n_max"]
    gen = torch.Generator().manual_seed(0)
    graphs = []
    for i in range(200):
        n = (
            n_max
            if i == 0
            else int(torch.randint(max(2, n_max // 4), n_max + 1, (1,), generator=gen))
        )
        e = torch.randint(0, n, (2, int(2.5 * n)), generator=gen)
        e = to_undirected(e[:, e[0] != e[1]], num_nodes=n)
        graphs.append(
            Data(x=torch.randn(n, 16, generator=gen), edge_index=e, y=torch.tensor([i % 2]))
        )
    batch = Batch.from_data_list(graphs)
    return batch.index_select(range(len(graphs))), n_max


def worker(args) -> dict:
    import torch
    import torch.nn.functional as F

    case = json.loads(args.case)
    device = torch.device(args.device)
    torch.manual_seed(0)
    dataset, max_nodes = _dataset(case, Path(args.cache))
    num_classes = int(max(int(d.y) for d in dataset)) + 1
    in_channels = dataset[0].x.size(-1)
    generator = torch.Generator().manual_seed(0)
    if args.formulation == "dense_pyg":
        import torch_geometric.transforms as T
        from torch_geometric.loader import DenseDataLoader

        # the connectivity only, as every formulation here (ToDense would stack MUTAG's edge
        # features into the adjacency)
        dense = T.Compose([_without_edge_attr, T.ToDense(max_nodes)])
        if hasattr(dataset, "transform"):
            # after the dataset's own transform (the degree features of COLLAB)
            dataset.transform = (
                T.Compose([dataset.transform, dense]) if dataset.transform else dense
            )
            data = dataset
        else:
            data = [dense(d.clone()) for d in dataset]
        loader = DenseDataLoader(data, batch_size=BATCH, shuffle=True, generator=generator)
        model = dense_reference(in_channels, num_classes, max_nodes)

        def step(batch):
            logits, aux = model(batch.x, batch.adj, batch.mask)
            return F.cross_entropy(logits, batch.y.view(-1)) + aux

    elif args.formulation.startswith("tgp"):
        from torch_geometric.loader import DataLoader

        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=generator)
        model = tgp_reference(
            in_channels, num_classes, max_nodes, batched=args.formulation == "tgp_batched"
        )

        def step(batch):
            logits, aux = model(batch.x, batch.edge_index, batch.batch, batch.num_graphs)
            return F.cross_entropy(logits, batch.y) + aux

    else:
        from torch_geometric.loader import DataLoader

        from diffpool.models import build_model

        spec = FORMULATIONS[args.formulation]
        loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, generator=generator)
        if spec.role == "base":
            model = build_model(
                "base", in_channels, num_classes, max_nodes, hidden_channels=HIDDEN,
                num_layers=LAYERS,
            )  # fmt: skip
            skip_s = {}
        else:
            # built as a user builds it: every default (input validation included) kept
            model = build_model(
                "diffpool",
                in_channels,
                num_classes,
                max_nodes,
                hidden_channels=HIDDEN,
                num_layers=LAYERS,
                num_levels=LEVELS,
                ratio=RATIO,
                budget=spec.budget,
                link_loss=args.link_loss,
                **dict(spec.options),
            )
            skip_s = as_trained(model.forward, "return_assignments", "return_levels")
            for setting in args.model_attr:  # e.g. group_dense_levels=false
                name, _, value = setting.partition("=")
                if not hasattr(model, name):
                    raise SystemExit(f"--model-attr: the model has no attribute {name!r}")
                setattr(model, name, json.loads(value))

        def step(batch):
            out = model(
                batch.x, batch.edge_index, batch.batch, batch_size=batch.num_graphs, **skip_s
            )
            return F.cross_entropy(out.logits, batch.y) + out.aux_loss

    model = model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    clock = PhaseClock(device)
    clock.enabled = args.phases
    if args.compile:
        if FORMULATIONS[args.formulation].role != "ours":
            raise SystemExit("--compile times our formulations only")
        # the step calls the compiled model; module hooks would break its graph: laps only
        model = compile_module(model, args.compile)
    else:
        _time_blocks(clock, args.formulation, model)
    num_batches = len(loader)
    limit = num_batches if args.max_batches <= 0 else min(num_batches, args.max_batches)

    def train_step(batch):
        compiled_step_begin(args.compile)
        batch = batch.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = step(batch)
        clock.lap("forward_and_loss")
        loss.backward()
        clock.lap("backward")
        optimizer.step()
        clock.lap("optimizer")
        if device.type == "cuda" and not args.phases:
            torch.cuda.synchronize()  # the step's time, one wait per step
        return batch, loss.detach()

    def epoch_batches():
        generator.manual_seed(0)  # every pass the same batches, in the same order
        for i, batch in enumerate(loader):
            yield batch
            if i + 1 >= limit:
                return

    base = reset_peak(device)
    warmup_start = time.perf_counter()
    if args.warmup:  # the same batches once untimed: compilation, CUDA graphs, caches
        for batch in epoch_batches():
            train_step(batch)
    warmup_seconds = time.perf_counter() - warmup_start
    times, losses = [], []
    t_epoch = time.perf_counter()
    t0 = t_epoch
    clock.lap(None)
    for i, batch in enumerate(epoch_batches()):  # loading (and ToDense) is part of the step
        clock.lap("loading")
        last, loss = train_step(batch)
        losses.append(loss)
        now = time.perf_counter()
        times.append(now - t0)
        t0 = now
        if i == 0:
            peak_first = peak_since(device, base)
            if device.type == "cpu":
                steady_malloc()
    measured = time.perf_counter() - t_epoch
    peak = max(peak_first, peak_since(device, base))
    full = limit == num_batches
    finite = bool(torch.stack(losses).isfinite().all())

    # one more step on the last batch, already on the device, without the clock: what waits
    # for the device in the model's step (forward, loss, backward, optimizer)
    clock.enabled = False

    def model_step():
        compiled_step_begin(args.compile)
        optimizer.zero_grad(set_to_none=True)
        step(last).backward()
        optimizer.step()

    syncs = dict(count=None, method=None, calls={})  # the CPU proxy sees no compiled code
    if not (args.compile and device.type == "cpu"):
        syncs = count_host_syncs(model_step, device)
    return dict(
        num_graphs=len(dataset),
        max_nodes=max_nodes,
        num_clusters=[
            math.ceil(RATIO * max_nodes),
            math.ceil(RATIO * math.ceil(RATIO * max_nodes)),
        ],
        num_batches=num_batches,
        measured_batches=limit,
        seconds_per_epoch=measured if full else sum(times) / limit * num_batches,
        extrapolated=not full,
        median_step_seconds=sorted(times)[len(times) // 2],
        warmup_seconds=warmup_seconds if args.warmup else None,
        peak_bytes=int(peak),
        finite_loss=finite,
        phases=clock.phases() if args.phases and not args.compile else None,
        host_syncs=syncs["count"],
        host_sync_method=syncs["method"],
        host_sync_calls=syncs["calls"],
    )


def _time_blocks(clock: PhaseClock, formulation: str, model) -> None:
    """The clock's hooks on the model's GNN blocks and pooling levels."""
    clock.time(model, "forward")
    if formulation == "dense_pyg":
        for block in (model.pool1, model.embed1, model.pool2, model.embed2, model.embed3):
            clock.time(block, "encoders")
    elif formulation.startswith("tgp"):
        for block in (model.embed1, model.embed2, model.embed3):
            clock.time(block, "encoders")
    elif formulation == "flat":
        clock.time(model.encoder, "encoders")
    else:
        for level in model.levels:
            clock.time(level, "levels")
            for gnn in (level.embed, level.pool):
                if gnn is not None:
                    clock.time(gnn, "level_encoders")
        clock.time(model.final, "final_encoder")


# --------------------------------------------------------------------------- driver side
def run_one(
    case: dict, formulation: str, args, max_batches: int, deadline: Deadline, compiled=None
) -> dict:
    """One measurement in a fresh process: its record, with the formulation's architecture."""
    cmd = [
        python(),
        __file__,
        "--worker",
        "--case",
        json.dumps(case),
        "--formulation",
        formulation,
        "--device",
        args.device,
        "--max-batches",
        str(max_batches),
        "--cache",
        str(args.cache),
        "--link-loss",
        args.link_loss,
    ]
    if args.model_attr:
        cmd += ["--model-attr", *args.model_attr]
    cmd += ["--phases" if args.phases else "--no-phases"]
    if args.warmup:
        cmd += ["--warmup"]
    if compiled:
        cmd += ["--compile", compiled]
    result = deadline.run(cmd, args.timeout, args.threads)
    result["architecture"] = FORMULATIONS[formulation].architecture
    if compiled:
        result["compile"] = compiled
    return result


def measure_alternating(case, formulations, args, deadline, compiled=None) -> dict:
    """``formulations``' measurements of ``case``, ``--repeats`` runs each, alternating,
    reduced to medians (keyed ``name+compiled`` for compiled ones)."""
    measured: dict[str, list[dict]] = {f: [] for f in formulations}
    first_wall: dict[str, float] = {}
    for repeat in range(args.repeats):  # the formulations alternate
        for f in formulations:
            if repeat and (measured[f][0]["status"] != "ok" or first_wall[f] > args.repeat_below):
                continue
            batches = args.max_batches
            # the formulations padded to D&D's largest graph (5748 nodes) time a few batches
            padded = f in ("dense_pyg", "tgp_batched")
            if padded and case["name"] == "DD" and args.dense_dd_batches > 0:
                batches = (
                    args.dense_dd_batches if batches <= 0 else min(batches, args.dense_dd_batches)
                )
            t0 = time.time()
            m = run_one(case, f, args, batches, deadline, compiled)
            wall = time.time() - t0
            first_wall.setdefault(f, wall)
            measured[f].append(m)
            name = f + (COMPILED if compiled else "")
            print(
                f"{case['name']:>22} {name:>15}: {m['status']}"
                + (
                    f" {m['seconds_per_epoch']:.1f} s/epoch"
                    f"{' (extrapolated)' if m['extrapolated'] else ''} "
                    f"{fmt_bytes(m['peak_bytes'])}"
                    if m["status"] == "ok"
                    else f" {m.get('detail', '')}"
                )
                + f"  [{wall:.0f}s wall, run {repeat + 1}]",
                flush=True,
            )
    suffix = COMPILED if compiled else ""
    return {f + suffix: median_run(runs) for f, runs in measured.items()}


def median_run(runs: list[dict]) -> dict:
    """One measurement from repeated runs: the median run's record (its phases, its batch
    counts) with the median time and median peak over the runs that finished, and every run's
    time in ``repeat_seconds``. The first failure is returned if none finished."""
    ok = [m for m in runs if m["status"] == "ok"]
    if not ok:
        return runs[0]
    ordered = sorted(ok, key=lambda m: m["seconds_per_epoch"])
    return dict(
        ordered[(len(ordered) - 1) // 2],
        seconds_per_epoch=statistics.median(m["seconds_per_epoch"] for m in ok),
        peak_bytes=int(statistics.median(m["peak_bytes"] for m in ok)),
        repeat_seconds=[m["seconds_per_epoch"] for m in ok],
    )


def _seconds(value: float) -> str:
    """Seconds with two decimals under 10 s (small graphs' epochs take fractions of one)."""
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"


def write_markdown(results: dict, path: Path) -> None:
    meta = results["meta"]
    names = list(dict.fromkeys(f for row in results["rows"] for f in row["runs"]))
    compiled = (
        f" `{COMPILED}`: ours under `torch.compile(mode={meta['compile']!r})`, measured after "
        "the eager formulations."
        if meta.get("compile")
        else ""
    )
    lines = [
        "# Training throughput: seconds per epoch and peak memory of the training step",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; device `{meta['device']}`; torch {meta['torch']}; "
        f"code {code_description(meta)}; "
        f"{LAYERS}-layer GraphSAGE blocks, {HIDDEN} hidden, {LEVELS} pooling levels at ratio "
        f"{RATIO}, batch {BATCH}, Adam; {meta.get('link_loss', 'frobenius')} link loss "
        "(ours)"
        + (f"; our models with {', '.join(meta['model_attr'])}" if meta.get("model_attr") else "")
        + ".  ",
        "Ratios are against the fastest / smallest peer of the same architecture in the same "
        "run, the peer named (> 1: ours is faster / smaller); the figure against the fastest "
        "peer of the other architecture, which computes its assignment differently, is a "
        "separate column. `dense_pyg`: PyG's example formulation, all graphs padded to the "
        "dataset's largest graph; `tgp_*`: torch-geometric-pool, whose select is an MLP, so "
        "it runs no pooling GNN. `x flat`: the step time as a multiple of the flat model's "
        "(`flat`: the same encoders, no pooling), what the pooling costs on top of the "
        "message passing. *Extrapolated* epochs time the first batches only (their mean "
        "times the number of batches). With several runs (the formulations alternating) time "
        "and peak are medians, the runs' range of times in brackets.  ",
        "Architectures: " + architecture_note(FORMULATIONS, names) + compiled,
        sync_note(meta)
        + (" The first batches ran once untimed before the timed pass over the same batches "
           "(`--warmup`)." if meta.get("warmup") else "")
        + ("" if meta.get("phases", True) else " No phase hooks (`--no-phases`)."),
    ]  # fmt: skip
    if meta.get("skipped"):
        lines.append(
            f"Time budget (`--deadline {meta['deadline']:g}` s): {meta['skipped']} "
            "measurement(s) did not run, marked *skipped (time budget)*."
        )
    lines += [
        "",
        "| dataset | graphs | N_max | C per level (fixed) | formulation | architecture | "
        "s / epoch | measured batches | peak memory | speed vs fastest peer (same "
        "architecture) | memory vs smallest peer (same architecture) | speed vs fastest peer "
        "of the other architecture | x flat | host syncs / step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        flat = row["runs"].get("flat")
        flat = flat if flat and flat["status"] == "ok" else None
        for f, m in row["runs"].items():
            arch = run_architecture(f, m, FORMULATIONS) or ""
            if m["status"] != "ok":
                lines.append(f"| {row['case']} | | | | {f} | {arch} | {m['status']} |" + " |" * 7)
                continue
            speed = mem = other = times_flat = ""
            if FORMULATIONS[base_name(f)].role == "ours":
                key = "seconds_per_epoch"
                fastest, fastest_other = best_peers(row["runs"], f, key, FORMULATIONS)
                smallest, _ = best_peers(row["runs"], f, "peak_bytes", FORMULATIONS)
                speed = ratio_cell(fastest, m[key])
                mem = ratio_cell(smallest, max(m["peak_bytes"], 1))
                other = ratio_cell(fastest_other, m[key])
            if flat and f != "flat":
                times_flat = f"{m['seconds_per_epoch'] / flat['seconds_per_epoch']:.2f}"
            batches = f"{m['measured_batches']} / {m['num_batches']}"
            epoch = _seconds(m["seconds_per_epoch"])
            repeats = m.get("repeat_seconds", [])
            if len(repeats) > 1:
                spread = f"{_seconds(min(repeats))}-{_seconds(max(repeats))}"
                epoch += f" [{spread}, {len(repeats)} runs]"
            if m["extrapolated"]:
                epoch += " (extrapolated)"
            syncs = "" if m.get("host_syncs") is None else m["host_syncs"]
            lines.append(
                f"| {row['case']} | {m['num_graphs']} | {m['max_nodes']} | "
                f"{m['num_clusters'][0]}, {m['num_clusters'][1]} | {f} | {arch} | {epoch} | "
                f"{batches} | {fmt_bytes(m['peak_bytes'])} | {speed} | {mem} | {other} | "
                f"{times_flat} | {syncs} |"
            )
    if not any(m.get("phases") for row in results["rows"] for m in row["runs"].values()):
        path.write_text("\n".join(lines) + "\n")
        return
    lines += [
        "",
        "## Where the time goes",
        "",
        "Share of the measured batches' time (module hooks and laps, see `PhaseClock`). "
        "Loading includes collating (and `ToDense` for `dense_pyg`); encoders are every GNN "
        "block; pooling is the rest of each pooling level (assignment softmax, densification, "
        "S^T Z, S^T A S, losses; for `dense_pyg` also the readout).",
        "",
        "| dataset | formulation | loading | encoders | pooling | other forward | backward | "
        "optimizer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        for f, m in row["runs"].items():
            if m["status"] != "ok" or not m.get("phases"):
                continue
            total = sum(m["phases"].values()) or 1.0
            shares = " | ".join(
                f"{100 * m['phases'][k] / total:.0f}%"
                for k in (
                    "loading",
                    "encoders",
                    "pooling",
                    "other_forward",
                    "backward",
                    "optimizer",
                )
            )
            lines.append(f"| {row['case']} | {f} | {shares} |")
    path.write_text("\n".join(lines) + "\n")


def plot(results: dict, path: Path) -> bool:
    """Draw the synthetic cases' scaling (``path``); whether there were any to draw."""
    rows = [r for r in results["rows"] if r["kind"] == "synthetic"]
    if not rows:
        return False
    scaling_plot(
        rows,
        list(dict.fromkeys(f for row in rows for f in row["runs"])),
        lambda m: m["seconds_per_epoch"] / m["num_batches"],
        "seconds per training step",
        "largest graph of the dataset (nodes)",
        f"Training step, 2 levels at ratio {RATIO}, batch {BATCH} "
        f"(synthetic, device {results['meta']['device']})",
        path,
    )
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(
        p,
        stem="training_throughput",
        formulations=FORMULATIONS,
        real=REAL,
        timeout=3600.0,
        here=HERE,
    )
    p.add_argument(
        "--max-batches",
        type=int,
        default=0,
        help="time at most this many batches of an epoch and extrapolate (0: whole epochs)",
    )
    p.add_argument(
        "--dense-dd-batches",
        type=int,
        default=4,
        help="batches of the densified D&D epoch (dense_pyg, tgp_batched) to time (a full one "
        "takes ~90 min on CPU)",
    )
    p.add_argument("--scaling", nargs="*", type=int, default=list(SCALING))
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each measurement, the formulations alternating; the table takes medians",
    )
    p.add_argument(
        "--repeat-below",
        type=float,
        default=120.0,
        help="measurements whose first run took longer (wall seconds) run once: a long epoch "
        "averages the machine's noise out by itself",
    )
    p.add_argument(
        "--model-attr",
        nargs="*",
        default=[],
        metavar="NAME=JSON",
        help="set attributes of our models before timing (ablations), e.g. "
        "group_dense_levels=false",
    )
    p.add_argument(
        "--link-loss",
        choices=("frobenius", "bce"),
        default="frobenius",
        help="our formulations' link loss (dense_pyg has the Frobenius one only)",
    )
    p.add_argument(
        "--phases",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="where the time goes (module hooks; on a GPU each waits for the device, which "
        "slows the step: --no-phases for the step's time alone, one wait per step)",
    )
    p.add_argument(
        "--warmup",
        action="store_true",
        help="run the timed batches once untimed first (compilation, CUDA graphs, caches)",
    )
    p.add_argument("--quick", action="store_true", help="ENZYMES and N_max 50, 5 batches, 1 run")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    unknown = [f for f in args.formulations if f not in FORMULATIONS]
    if unknown:
        p.error(f"unknown formulations {unknown}; choose from {list(FORMULATIONS)}")
    if args.link_loss != "frobenius" and "dense_pyg" in args.formulations and not args.worker:
        p.error(
            f"--link-loss {args.link_loss} would time ours against a different loss: "
            "dense_pyg (dense_diff_pool) has the Frobenius link loss only; pass "
            "--formulations ours_fixed ours_per_graph"
        )
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.real, args.scaling, args.max_batches, args.repeats = ["ENZYMES"], [50], 5, 1
    deadline = Deadline(args.deadline)
    import torch

    from diffpool.utils.provenance import provenance

    results = dict(
        meta=dict(
            command="python benchmarks/training_throughput.py " + " ".join(argv or sys.argv[1:]),
            machine=machine_description(args.device),
            device=args.device,
            torch=torch.__version__,
            provenance=provenance(),
            date=time.strftime("%Y-%m-%d"),
            link_loss=args.link_loss,
            model_attr=args.model_attr,
            phases=args.phases,
            warmup=args.warmup,
            compile=args.compile,
            deadline=args.deadline,
            architectures={a: ARCHITECTURES[a] for a in
                           dict.fromkeys(FORMULATIONS[f].architecture for f in args.formulations)},
            source_sha256=source_hash(),
        ),
        rows=[],
    )  # fmt: skip
    cases = []
    for name in args.real:
        if tu_available(name, args.tu_dir):
            cases.append(dict(kind="real", name=name, tu_dir=str(args.tu_dir)))
        else:
            print(f"skip {name}: {args.tu_dir}/{name}.zip not found", file=sys.stderr)
    cases += [dict(kind="synthetic", name=f"synthetic N_max={n}", n_max=n) for n in args.scaling]
    formulations = available_formulations(args.formulations)
    for case in cases:
        row = dict(case=case["name"], kind=case["kind"], n_max=case.get("n_max"), runs={})
        row["runs"] = measure_alternating(case, formulations, args, deadline)
        for f in args.formulations:
            if f not in row["runs"]:
                row["runs"][f] = dict(
                    status="not installed", architecture=FORMULATIONS[f].architecture
                )
        results["rows"].append(row)
    if args.compile:  # after every eager measurement: a long compilation cannot crowd them out
        ours = [f for f in formulations if FORMULATIONS[f].role == "ours"]
        for case in compile_cases(cases, args.compile_on):
            row = next(r for r in results["rows"] if r["case"] == case["name"])
            row["runs"].update(measure_alternating(case, ours, args, deadline, args.compile))
    results["meta"]["skipped"] = sum(
        m["status"] == Deadline.SKIPPED for row in results["rows"] for m in row["runs"].values()
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out.with_suffix(".md"))
    drawn = plot(results, out.with_suffix(".png"))
    print(f"wrote {out}.json/.md" + ("/.png" if drawn else " (no synthetic case to plot)"))


if __name__ == "__main__":
    main()
