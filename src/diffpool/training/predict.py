"""Using a trained model: load a run, predict, and write or read the predictions and what the
pooling did.

* :func:`load_run`: the trained :class:`~diffpool.training.GraphClassifier` and its data
  module from a ``diffpool-train`` run directory (or a checkpoint inside one);
* :class:`PredictionWriter`: a Lightning ``BasePredictionWriter`` that writes what
  ``Trainer.predict`` returns (what ``diffpool-predict`` runs);
* :func:`collect_predictions`: the outputs of ``Trainer.predict`` (one dict per batch, see
  :meth:`GraphClassifier.predict_step <diffpool.training.GraphClassifier.predict_step>`)
  as one table;
* :func:`write_predictions` / :func:`read_predictions`: that table as CSV (or Parquet where
  ``pyarrow`` is installed and the file ends in ``.parquet``): ``graph_id``, ``target``,
  ``prediction`` and, for classification, ``prob_<k>``;
* :func:`write_assignments` / :func:`load_assignments`: each pooling level's soft assignment
  S, hard clusters and pooled embeddings X' per graph, one ``.pt`` file per level, read back
  with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import csv
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from diffpool.utils import files, targets
from diffpool.utils.extras import require


def load_run(
    run_dir: str | Path,
    checkpoint: str = "best",
    data: dict | None = None,
    trust: Sequence[str] = (),
):
    """The trained module and the data module of a ``diffpool-train`` run.

    The run's files are data: the checkpoint and the data config of ``results.json`` are
    built only from the package's registries (:mod:`diffpool.utils.targets`), the names in
    ``trust`` and the ``_target_`` names given in ``data``.

    Args:
        run_dir (str): A job directory (holding ``results.json`` and ``checkpoints/``), or a
            ``.ckpt`` file inside one's ``checkpoints/``.
        checkpoint (str, optional): ``"best"`` (the fair protocol's epoch), ``"last"``, or a
            path; ignored when ``run_dir`` is a checkpoint. (default: :obj:`"best"`)
        data (dict, optional): Entries that override the run's data config (e.g.
            ``{"root": "elsewhere/TU"}``; ``{"dataset": {"root": ...}}`` changes one entry of
            the dataset's spec). (default: :obj:`None`)
        trust (Sequence[str], optional): ``_target_`` names the run's files may build
            besides the registries' (e.g. your own dataset class). (default: none)

    Raises:
        FileNotFoundError: no such run or checkpoint.
        ValueError: a checkpoint that cannot be read, or whose input width is not the
            dataset's.
        UntrustedTargetError: a file names what no registry holds (and ``trust`` does not).
    """
    from diffpool.training.results import RESULTS, RunResult

    run_dir, path = Path(run_dir), None
    if run_dir.suffix == ".ckpt":
        path, run_dir = run_dir, run_dir.parent.parent
    result = RunResult.load(run_dir)
    if path is None:
        path = _checkpoint(run_dir, result, checkpoint)
    module = load_checkpoint(path, trust)
    trusted = {*trust, *targets.target_names(data or {})}
    # the file's loader processes are not: the user's own settings may ask for them
    data_cfg = _merged({**result.config["data"], "num_workers": 0}, data or {})
    return module, load_data(module, data_cfg, path, source=run_dir / RESULTS, trust=trusted)


def _merged(base: dict, over: dict) -> dict:
    """``base`` with the entries of ``over``: a nested mapping without a ``_target_`` of its own
    (``{"dataset": {"root": ...}}``) merges entry by entry, a spec replaces."""
    merged = dict(base)
    for key, value in over.items():
        if (
            isinstance(value, dict)
            and "_target_" not in value
            and isinstance(merged.get(key), dict)
        ):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def load_checkpoint(path: str | Path, trust: Sequence[str] = ()):
    """A :class:`~diffpool.training.GraphClassifier` from a checkpoint, on the CPU (see
    :meth:`GraphClassifier.load_from_checkpoint
    <diffpool.training.GraphClassifier.load_from_checkpoint>`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not a readable GraphClassifier checkpoint.
        UntrustedTargetError: the checkpoint names what no registry holds (and ``trust``
            does not).
    """
    from diffpool.training.module import GraphClassifier

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return GraphClassifier.load_from_checkpoint(
            str(path), map_location="cpu", weights_only=True, trust=trust
        )
    except (RuntimeError, EOFError, KeyError, OSError, TypeError, pickle.UnpicklingError) as err:
        raise ValueError(
            f"{path} is not a readable GraphClassifier checkpoint ({type(err).__name__}: {err})"
        ) from err


def load_data(
    module,
    data_cfg: dict,
    checkpoint: str | Path,
    source: str | Path | None = None,
    trust: Sequence[str] = (),
):
    """The data module of ``data_cfg`` (a ``_target_`` spec), set up with the transform the
    module's model needs. ``source``: the file ``data_cfg`` was read from (then only the
    names of the registries and ``trust`` are built); :obj:`None`: the user's own config.

    Raises:
        ValueError: its node features are not as wide as the module's input (``checkpoint``
            names where the module came from).
        UntrustedTargetError: ``source`` names what no registry holds.
    """
    from diffpool.models import data_transform

    spec = module.hparams.model
    reading = targets.reading(source, trust) if source is not None else contextlib.nullcontext()
    with reading:
        datamodule = targets.build(
            data_cfg, "datamodule", transform=data_transform(spec) if spec else None
        )
        datamodule.setup()
    expected = module.hparams.in_channels
    if datamodule.num_features != expected:
        raise ValueError(
            f"the checkpoint {checkpoint} takes {expected} node features, but "
            f"{datamodule.name} with these data settings gives {datamodule.num_features}: "
            "use the run's data settings (node_features, max_degree) or a checkpoint "
            "trained on this data"
        )
    return datamodule


def _checkpoint(run_dir: Path, result, checkpoint: str) -> Path:
    if checkpoint == "best":
        # the run's own checkpoint of that name (a moved run, or a results.json naming a
        # file elsewhere, is read from its checkpoints/)
        found = result.fair.checkpoint
        if found and (run_dir / "checkpoints" / Path(found).name).is_file():
            return run_dir / "checkpoints" / Path(found).name
        candidates = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
        if not candidates:
            raise FileNotFoundError(f"no best checkpoint in {run_dir / 'checkpoints'}")
        return candidates[-1]
    return run_dir / "checkpoints" / "last.ckpt" if checkpoint == "last" else Path(checkpoint)


class PredictionWriter(BasePredictionWriter):
    """Writes the predictions of ``Trainer.predict`` when it ends: the table to ``out``
    (:func:`write_predictions`) and, with ``assignments``, one file per pooling level
    (:func:`write_assignments`; the module's ``predict_assignments`` is set for it).

    Nothing is overwritten: before the first graph is predicted, ``out`` and (with
    ``assignments``) every ``<out>.level*.pt`` already there are refused, a symbolic link
    included, and each file is created whole beside its place and moved into it.

    Args:
        out (str): The table's path (``.csv``, or ``.parquet`` with ``pyarrow``).
        assignments (bool, optional): Also write every level's assignments.
            (default: :obj:`False`)

    Attributes:
        predictions (dict): What was predicted (:func:`collect_predictions`), once written.
        written (list[Path]): The files written.
    """

    def __init__(self, out: str | Path, assignments: bool = False):
        super().__init__(write_interval="epoch")
        self.out, self.assignments = Path(out), bool(assignments)
        self.predictions: dict[str, Any] | None = None
        self.written: list[Path] = []

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.world_size > 1:  # each rank would hold its share of the graphs only
            raise ValueError("PredictionWriter writes the predictions of one device")
        pl_module.predict_assignments = self.assignments
        levels = sorted(self.out.parent.glob(f"{self.out.name}.level*.pt"))
        for path in [self.out] + (levels if self.assignments else []):
            if path.exists() or path.is_symlink():
                raise FileExistsError(
                    f"{path} exists: choose another out= (nothing was overwritten)"
                )

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        self.predictions = collect_predictions(predictions)
        self.written = [write_predictions(self.predictions, self.out)]
        if self.assignments:
            self.written += write_assignments(self.predictions, self.out)


def collect_predictions(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-batch dicts of ``Trainer.predict`` as one: tensors concatenated over graphs,
    per-graph lists (the levels' assignments) joined."""
    if not outputs:
        raise ValueError("no predictions: the data to predict on is empty")
    merged: dict[str, Any] = {}
    for key in outputs[0]:
        if key == "levels":
            continue
        values = [o[key] for o in outputs]
        if values[0] is None or isinstance(values[0], str):
            merged[key] = values[0]
        else:
            merged[key] = torch.cat(values)
    if "levels" in outputs[0]:
        merged["levels"] = [
            {k: [g for o in outputs for g in o["levels"][level][k]] for k in level_out}
            for level, level_out in enumerate(outputs[0]["levels"])
        ]
    return merged


def _columns(name: str, values: Tensor | None, rows: int) -> dict[str, list]:
    """``name`` for one value per graph, ``name_<t>`` for several."""
    if values is None:
        return {name: [None] * rows}
    values = values.view(rows, -1)
    if values.size(1) == 1:
        return {name: values[:, 0].tolist()}
    return {f"{name}_{t}": values[:, t].tolist() for t in range(values.size(1))}


def write_predictions(predictions: dict[str, Any], path: str | Path) -> Path:
    """Write one row per graph: ``graph_id``, ``target`` (empty where unknown),
    ``prediction`` (``target_<t>`` / ``prediction_<t>`` for several labels or values) and,
    for classification, ``prob_<k>`` (class ``k``'s probability; a binary task's
    ``prob_1``; label ``t``'s for multi-label): CSV, or Parquet for a ``.parquet`` path (needs
    ``pyarrow``). An existing file (a symbolic link included, dangling or not) is not
    overwritten: the file is created whole beside it and moved into place
    (:func:`diffpool.utils.files.write_atomically`)."""
    import io

    path = Path(path)
    if path.is_symlink() or path.exists():
        raise FileExistsError(f"{path} exists: choose another out= (nothing was overwritten)")
    rows = len(predictions["graph_id"])
    columns: dict[str, list] = {"graph_id": predictions["graph_id"].tolist()}
    columns.update(_columns("target", predictions.get("target"), rows))
    columns.update(_columns("prediction", predictions["prediction"], rows))
    probs = predictions.get("probabilities")
    if probs is not None:
        first = 1 if predictions.get("task") == "binary" else 0
        for k in range(probs.size(1)):
            columns[f"prob_{k + first}"] = probs[:, k].tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        require("parquet", f"writing {path.name}")
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer)
        return files.write_atomically(path, buffer.getvalue(), overwrite=False)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in zip(*columns.values()):
        writer.writerow(["" if v is None else v for v in row])  # floats as repr: exact
    return files.write_atomically(path, text.getvalue(), overwrite=False)


def _number(text: str) -> int | float | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def _stack(columns: dict[str, list], name: str) -> Tensor | None:
    """The column ``name`` (or ``name_<t>``) as ``[G]`` (or ``[G, T]``); None if unknown."""
    if name in columns:
        names = [name]
    else:
        names = sorted(
            (k for k in columns if k.startswith(f"{name}_")), key=lambda k: int(k.split("_")[-1])
        )
    values = [columns[k] for k in names]
    if not values or any(v is None for col in values for v in col):
        return None
    floats = any(isinstance(v, float) for col in values for v in col)
    tensor = torch.tensor(values, dtype=torch.float64 if floats else torch.long).T
    return tensor[:, 0] if name in columns else tensor


def read_predictions(path: str | Path) -> dict[str, Tensor | None]:
    """A file of :func:`write_predictions` as ``graph_id``, ``target`` (None when unknown),
    ``prediction`` (``[G]``, or ``[G, T]`` for several labels or values) and
    ``probabilities`` ``[G, K]`` (None for regression)."""
    path = Path(path)
    if path.suffix == ".parquet":
        require("parquet", f"reading {path.name}")
        import pyarrow.parquet as pq

        columns = {k: list(v) for k, v in pq.read_table(path).to_pydict().items()}
    else:
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle))
        header, body = rows[0], rows[1:]
        columns = {
            name: [
                None if r[i] == "" else float(r[i]) if name.startswith("prob_") else _number(r[i])
                for r in body
            ]
            for i, name in enumerate(header)
        }
    probs = [k for k in columns if k.startswith("prob_")]
    return {
        "graph_id": torch.tensor(columns["graph_id"], dtype=torch.long),
        "target": _stack(columns, "target"),
        "prediction": _stack(columns, "prediction"),
        "probabilities": (
            torch.tensor([columns[k] for k in probs], dtype=torch.float64).T if probs else None
        ),
    }


def write_assignments(predictions: dict[str, Any], stem: str | Path) -> list[Path]:
    """One file ``<stem>.level<l>.pt`` per pooling level: ``graph_id`` ``[G]`` and, per
    graph, ``s`` (the soft assignment ``[N_g, C_g]``: its real nodes and the clusters it
    uses), ``clusters`` (each node's hard cluster, ``[N_g]``) and ``x`` (the pooled embeddings
    ``[C_g, F]``). Read with :func:`load_assignments`."""
    levels = predictions.get("levels")
    if not levels:
        raise ValueError("the predictions hold no assignments: predict with assignments on")
    stem = Path(stem)
    paths = [stem.with_name(f"{stem.name}.level{level}.pt") for level in range(len(levels))]
    for path in paths:  # a symbolic link included, dangling or not
        if path.is_symlink() or path.exists():
            raise FileExistsError(f"{path} exists: choose another out= (nothing was overwritten)")
    stem.parent.mkdir(parents=True, exist_ok=True)
    for path, content in zip(paths, levels):
        files.save_atomically(
            {"graph_id": predictions["graph_id"], **content}, path, overwrite=False
        )
    return paths


def load_assignments(path: str | Path) -> dict[str, Any]:
    """A level file of :func:`write_assignments`: ``graph_id`` ``[G]`` and the lists ``s``,
    ``clusters`` and ``x`` (one tensor per graph, in the order of ``graph_id``)."""
    content = files.load(path, map_location="cpu")
    if not isinstance(content, dict) or not {"graph_id", "s", "clusters", "x"} <= set(content):
        raise ValueError(f"{path} is not an assignments file of diffpool-predict")
    return content
