"""Using a trained run: :func:`load_run`, the :class:`PredictionWriter` of ``Trainer.predict``
and its files: a table (:func:`write_predictions`, :func:`read_predictions`) and each pooling
level's assignments (:func:`write_assignments`, :func:`load_assignments`)."""

from __future__ import annotations

import contextlib
import csv
import io
import pickle
import re
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
    """The trained module and the data module of a ``diffpool-train`` run; its files build
    only the names of :mod:`diffpool.utils.targets`' registries, ``trust`` and ``data``.

    Args:
        run_dir (str): A job directory, or a ``.ckpt`` in its ``checkpoints/``.
        checkpoint (str, optional): ``"best"`` (the fair protocol's), ``"last"`` or a path;
            ignored for a ``.ckpt`` ``run_dir``. (default: :obj:`"best"`)
        data (dict, optional): Entries over the run's data config; a nested mapping without
            a ``_target_`` (``{"dataset": {"root": ...}}``) changes entries of the run's.
            (default: :obj:`None`)
        trust (Sequence[str], optional): ``_target_`` names the run's files may build besides
            the registries'. (default: none)

    Raises:
        FileNotFoundError: no such run or checkpoint.
        ValueError: an unreadable checkpoint, or one whose input width is not the data's.
        UntrustedTargetError: a file names what no registry holds (and ``trust`` does not).
    """
    from diffpool.training.results import RESULTS, RunResult

    run_dir, path = Path(run_dir), None
    if run_dir.suffix == ".ckpt":
        path, run_dir = run_dir, run_dir.parent.parent
    result = RunResult.load(run_dir)
    path = path or _checkpoint(run_dir, result, checkpoint)
    module = load_checkpoint(path, trust)
    trusted = {*trust, *targets.target_names(data or {})}
    # no loader processes from a file: the user's own settings may ask for them; a setting
    # its split did not read (stored by a run of before that was an error) is left out
    from diffpool.training.datamodule import unread_by_split

    stored = result.config["data"]
    unread = unread_by_split(stored)
    kept = {k: v for k, v in stored.items() if k not in unread}
    data_cfg = _merged({**kept, "num_workers": 0}, data or {})
    _check_roots(result.config["data"], data or {}, run_dir / RESULTS)
    # the names in data are trusted for the specs the caller wrote: what the run's file keeps
    # (data.transform under data=zinc, which names PyG's ZINC) builds only the registries'
    # and trust's (ZINC unpickles its raw files, wherever the file's root says)
    with targets.reading(run_dir / RESULTS, trust):
        targets.check(_kept(result.config["data"], data or {}), "datamodule")
    return module, load_data(module, data_cfg, path, run_dir / RESULTS, trusted)


def _check_roots(stored: dict, given: dict, source: Path, where: str = "data") -> None:
    """Refuse a data folder (a ``root`` entry) that the run's file names, the caller does not,
    that does not exist and lies outside the working directory (absolute, or with ``..``): the
    data would be unpacked or downloaded wherever the file says (a run copied from another
    machine names its author's folders). A relative one is made under the working directory,
    as the run made it (a dataset that never writes to its root need not have one)."""
    for key, value in stored.items():
        over = given.get(key) if isinstance(given, dict) else None
        if isinstance(value, dict) and "_target_" not in (over or {}):
            _check_roots(value, over or {}, source, f"{where}.{key}")
        elif key == "root" and over is None and isinstance(value, str):
            path = Path(value).expanduser()
            if (path.is_absolute() or ".." in path.parts) and not path.is_dir():
                viz = " --data-root PATH (diffpool-viz)," if where == "data" else ""
                raise FileNotFoundError(
                    f"{source} names the data folder {value!r} ({where}.root), which does not "
                    f"exist here: name yours with ++{where}.root=PATH (diffpool-predict),{viz} "
                    "or data={...} (load_run)"
                )


def _kept(base: dict, over: dict) -> dict:
    """What of ``base`` :func:`_merged` keeps under ``over``: its entries that ``over`` does not
    replace (a spec of ``over``'s own replaces one of ``base`` whole)."""
    kept = {}
    for key, value in base.items():
        given = over.get(key)
        if key not in over:
            kept[key] = value
        elif isinstance(given, dict) and "_target_" not in given and isinstance(value, dict):
            kept[key] = _kept(value, given)
    return kept


def _merged(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and "_target_" not in value and isinstance(base.get(key), dict):
            value = _merged(base[key], value)
        merged[key] = value
    return merged


def _checkpoint(run_dir: Path, result, checkpoint: str) -> Path:
    folder = run_dir / "checkpoints"
    if checkpoint != "best":
        return folder / "last.ckpt" if checkpoint == "last" else Path(checkpoint)
    # the fair protocol's own (a moved run's in its folder): another best-*.ckpt may hold
    # another metric's best epoch (callbacks.model_checkpoint.monitor=val/loss)
    named = folder / Path(result.fair.checkpoint).name if result.fair.checkpoint else None
    if named is None or not named.is_file():
        raise FileNotFoundError(
            f"no checkpoint of the fair protocol's epoch in {folder} (a run without a "
            "validation set, or whose checkpoint callback watched another metric, keeps "
            "none): checkpoint=last predicts with the last epoch's weights, checkpoint=PATH "
            "with a checkpoint's"
        )
    return named


def load_checkpoint(path: str | Path, trust: Sequence[str] = ()):
    """:meth:`GraphClassifier.load_from_checkpoint
    <diffpool.training.GraphClassifier.load_from_checkpoint>` on the CPU, with a
    FileNotFoundError or ValueError for a missing or unreadable file."""
    from diffpool.training.module import GraphClassifier

    if not Path(path).exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return GraphClassifier.load_from_checkpoint(
            str(path), map_location="cpu", weights_only=True, trust=trust
        )
    except (RuntimeError, EOFError, KeyError, OSError, TypeError, ValueError, AttributeError,
            pickle.UnpicklingError) as err:  # fmt: skip
        if isinstance(err, ValueError) and str(path) in str(err):  # named already
            raise
        raise ValueError(
            f"{path} is not a readable GraphClassifier checkpoint ({type(err).__name__}: {err})"
        ) from err


def load_data(module, data_cfg: dict, checkpoint, source=None, trust: Sequence[str] = ()):
    """The data module of the spec ``data_cfg``, set up with the transform ``module``'s model
    needs; read from the file ``source`` (building only the registries' names and ``trust``)
    or, with :obj:`None`, the user's own. A ValueError if its input width is not the
    module's (``checkpoint``: where the module came from)."""
    from diffpool.models import data_transform
    from diffpool.training.datamodule import followed_by

    spec = module.hparams.model
    with targets.reading(source, trust) if source is not None else contextlib.nullcontext():
        data_cfg = followed_by(data_cfg, data_transform(spec) if spec else None)
        datamodule = targets.build(data_cfg, "datamodule")
        datamodule.setup()
    _check_split(checkpoint, datamodule)
    expected = module.hparams.in_channels
    if datamodule.num_features != expected:
        raise ValueError(
            f"the checkpoint {checkpoint} takes {expected} node features, but "
            f"{datamodule.name} with these data settings gives {datamodule.num_features}: "
            "use the run's data settings (node_features, max_degree) or a checkpoint "
            "trained on this data"
        )
    return datamodule


#: the data settings that decide which graphs a fold tests (and so which it trained on)
SPLIT_KEYS = ("split", "fold", "num_folds", "seed", "val_ratio", "split_file", "inner",
              "split_names")  # fmt: skip


def _check_split(checkpoint, datamodule) -> None:
    """A checkpoint's test (or validation, or training) graphs are those of the split it was
    trained with: another fold's test set holds graphs it trained on. Checked against the
    data module settings the checkpoint stores (Lightning's), where it has them."""
    if datamodule.hparams.get("predict_split") == "all":
        return
    # read once already, as the module: a failure here is not a reason to skip the check
    trained = files.checkpoint_entry(checkpoint, "datamodule_hyper_parameters")
    if not isinstance(trained, dict):
        return
    given = datamodule.hparams
    from diffpool.training.datamodule import unread_by_split

    unread = unread_by_split(trained)  # what the trained split did not read
    differ = [f"data.{k}={given.get(k)!r} (trained with {trained[k]!r})"
              for k in SPLIT_KEYS
              if k in trained and k not in unread and given.get(k) != trained[k]]  # fmt: skip
    if differ:
        raise ValueError(
            f"the checkpoint {checkpoint} was trained on another split than the data given: "
            + ", ".join(differ)
            + "; its test fold is only that of its own split (give the run's data settings)"
        )


def _refuse_existing(*paths: Path) -> None:
    for path in paths:  # a symbolic link included, dangling or not
        if path.is_symlink() or path.exists():
            raise FileExistsError(f"{path} exists: choose another out= (nothing was overwritten)")


class PredictionWriter(BasePredictionWriter):
    """Writes what ``Trainer.predict`` predicted when it ends: the table to ``out`` and, with
    ``assignments``, every level's assignments beside it. Existing files are refused before
    the first graph is predicted.

    Args:
        out (str): The table's path (``.csv``, or ``.parquet`` with ``pyarrow``).
        assignments (bool, optional): Also write :func:`write_assignments`' files.
            (default: :obj:`False`)

    Attributes:
        predictions (dict): What was predicted (:func:`collect_predictions`).
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
        levels = self.out.parent.glob(f"{self.out.name}.level*.pt")
        _refuse_existing(self.out, *(sorted(levels) if self.assignments else []))

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        self.predictions = collect_predictions(predictions)
        self.written = [write_predictions(self.predictions, self.out)]
        if self.assignments:
            self.written += write_assignments(self.predictions, self.out)


def collect_predictions(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The dicts of :meth:`GraphClassifier.predict_step
    <diffpool.training.GraphClassifier.predict_step>` over batches as one, per graph."""
    if not outputs:
        raise ValueError("no predictions: the data to predict on is empty")
    merged: dict[str, Any] = {}
    for key, first in outputs[0].items():
        if key == "levels":
            merged[key] = [
                {k: [g for o in outputs for g in o[key][level][k]] for k in content}
                for level, content in enumerate(first)
            ]
        elif first is None or isinstance(first, str):
            merged[key] = first
        else:
            merged[key] = torch.cat([o[key] for o in outputs])
    return merged


def _columns(name: str, values: Tensor | None, rows: int, first: int | None = None) -> dict:
    """``name`` for one value per graph (unless ``first`` is given), else ``name_<first + t>``."""
    if values is None:
        return {name: [None] * rows}
    values = values.view(rows, -1)
    if values.size(1) == 1 and first is None:
        return {name: values[:, 0].tolist()}
    return {f"{name}_{t + (first or 0)}": values[:, t].tolist() for t in range(values.size(1))}


def write_predictions(predictions: dict[str, Any], path: str | Path) -> Path:
    """Write a table of :func:`collect_predictions`, one row per graph: ``graph_id``,
    ``target`` (empty where unknown), ``prediction`` (``target_<t>``, ``prediction_<t>`` for
    several labels or values) and, for classification, ``prob_<k>`` (class ``k``'s; a binary
    task's ``prob_1``; label ``k``'s), as CSV or, for a ``.parquet`` path, Parquet. An
    existing file is refused; the new one is created whole."""
    path, rows = Path(path), len(predictions["graph_id"])
    _refuse_existing(path)
    columns = {
        "graph_id": predictions["graph_id"].tolist(),
        **_columns("target", predictions.get("target"), rows),
        **_columns("prediction", predictions["prediction"], rows),
    }
    if predictions.get("probabilities") is not None:
        first = int(predictions.get("task") == "binary")
        columns.update(_columns("prob", predictions["probabilities"], rows, first))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        require("parquet", f"writing {path.name}")
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.table(columns), buffer)
        return files.write_atomically(path, buffer.getvalue(), overwrite=False)
    text = io.StringIO(newline="")
    csv.writer(text).writerows([columns, *zip(*columns.values())])  # floats as repr: exact
    return files.write_atomically(path, text.getvalue(), overwrite=False)


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        return float(text) if text else None


def _tensor(columns: list[list] | None, one: bool) -> Tensor | None:
    if not columns or any(v is None for column in columns for v in column):
        return None
    floats = any(isinstance(v, float) for column in columns for v in column)
    tensor = torch.tensor(columns, dtype=torch.float64 if floats else torch.long).T
    return tensor[:, 0] if one else tensor


#: the largest prediction table read as CSV
MAX_TABLE_BYTES = 1 << 30


def read_predictions(path: str | Path) -> dict[str, Tensor | None]:
    """A table of :func:`write_predictions` as ``graph_id``, ``target`` (:obj:`None` when
    unknown), ``prediction`` (``[G]``, or ``[G, T]``) and ``probabilities`` ``[G, K]``
    (:obj:`None` for regression).

    Raises:
        ValueError: not such a table (no header, a row of another length, a cell that is no
            number); the message names the file.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        require("parquet", f"reading {path.name}")
        import pyarrow.parquet as pq

        columns = pq.read_table(path).to_pydict()
    else:
        text = files.read_regular(path, MAX_TABLE_BYTES, "prediction table").decode("utf-8")
        try:
            header, *body = csv.reader(io.StringIO(text, newline=""))
            if any(len(row) != len(header) for row in body):
                raise ValueError("a row of another length than the header")
            columns = {name: [_number(r[i]) for r in body] for i, name in enumerate(header)}
        except (ValueError, csv.Error) as err:  # no header ("not enough values"), text cells
            raise ValueError(f"{path} is not a prediction table ({err})") from None
    groups: dict[str, list[list]] = {}  # target_<t> as target, prob_<k> as probabilities
    for name, column in columns.items():
        key = re.sub(r"_\d+$", "", name)
        groups.setdefault("probabilities" if key == "prob" else key, []).append(column)
    keys = ("graph_id", "target", "prediction", "probabilities")
    return {key: _tensor(groups.get(key), key in columns) for key in keys}


def write_assignments(predictions: dict[str, Any], stem: str | Path) -> list[Path]:
    """Write ``<stem>.level<l>.pt`` per pooling level of :func:`collect_predictions`:
    ``graph_id`` ``[G]`` and, per graph, ``s`` (the soft assignment ``[N_g, C_g]`` of its
    nodes and clusters), ``clusters`` (``[N_g]``) and ``x`` (the pooled embeddings
    ``[C_g, F]``). Existing files are refused before any is written."""
    levels = predictions.get("levels")
    if not levels:
        raise ValueError("the predictions hold no assignments: predict with assignments on")
    stem = Path(stem)
    paths = [stem.with_name(f"{stem.name}.level{level}.pt") for level in range(len(levels))]
    _refuse_existing(*paths)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for path, content in zip(paths, levels):
        files.save_atomically(
            {"graph_id": predictions["graph_id"], **content}, path, overwrite=False
        )
    return paths


def load_assignments(path: str | Path) -> dict[str, Any]:
    """A file of :func:`write_assignments`, read with ``torch.load(weights_only=True)``."""
    content = files.load(path, map_location="cpu")
    if not isinstance(content, dict) or not {"graph_id", "s", "clusters", "x"} <= set(content):
        raise ValueError(f"{path} is not an assignments file of diffpool-predict")
    return content
