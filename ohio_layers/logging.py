"""Learning-curve loggers: one small protocol, JSONL/CSV files by default, TensorBoard as an extra.

    logger = make_logger("runs/x/train.jsonl")      # or .csv, or a folder for TensorBoard
    agent.fit(data, logger=logger)                  # every averaged row: logger.log(step, loss=..., ...)
    logger.close()
    plot_log("runs/x/train.jsonl", "runs/x/train.png")

Any object with ``log(step, **scalars)`` and ``close()`` is a :class:`Logger`; ``fit`` /
``fit_online`` also accept a plain callable ``row -> None`` (see :func:`emit`). Files are
appended line by line and flushed, so a crashed run keeps its curve; the CSV header is the set of
keys of the first row (later new keys are written to a JSON column ``extra``).
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

__all__ = ["Logger", "JSONLLogger", "CSVLogger", "TensorBoardLogger", "MultiLogger", "make_logger", "emit", "read_log",
           "plot_log", "plot_histories"]

PathLike = Union[str, "os.PathLike[str]"]


@runtime_checkable
class Logger(Protocol):
    """``log(step, **scalars)`` records one row of scalars at ``step``; ``close()`` flushes and releases."""

    def log(self, step: int, **scalars: float) -> None: ...

    def close(self) -> None: ...


def _scalars(scalars: Mapping[str, Any]) -> Dict[str, float]:
    out = {}
    for k, v in scalars.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"logger scalar {k!r} must be a number, got {type(v).__name__}") from None
    return out


class JSONLLogger:
    """One JSON object per line: ``{"step": int, <name>: float, ...}`` (non-finite values as ``null``)."""

    def __init__(self, path: PathLike, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w")

    def log(self, step: int, **scalars: float) -> None:
        row = {"step": int(step), **{k: (v if math.isfinite(v) else None) for k, v in _scalars(scalars).items()}}
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class CSVLogger:
    """CSV with the columns ``step`` + the first row's keys; keys first seen later go to ``extra`` (JSON)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", newline="")
        self._writer: Optional[csv.DictWriter] = None
        self._columns: List[str] = []

    def log(self, step: int, **scalars: float) -> None:
        values = _scalars(scalars)
        if self._writer is None:
            self._columns = ["step", *values, "extra"]
            self._writer = csv.DictWriter(self._f, self._columns)
            self._writer.writeheader()
        row: Dict[str, Any] = {"step": int(step)}
        extra = {}
        for k, v in values.items():
            if k in self._columns:
                row[k] = v
            else:
                extra[k] = v
        row["extra"] = json.dumps(extra) if extra else ""
        self._writer.writerow(row)
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


class TensorBoardLogger:
    """``SummaryWriter.add_scalar(name, value, step)`` per scalar (extra ``tensorboard``)."""

    def __init__(self, log_dir: PathLike) -> None:
        from ._extras import require

        require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(str(self.log_dir))

    def log(self, step: int, **scalars: float) -> None:
        for k, v in _scalars(scalars).items():
            self._writer.add_scalar(k, v, int(step))

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


class MultiLogger:
    """Sends every row to each of ``loggers``."""

    def __init__(self, *loggers: Logger) -> None:
        self.loggers = loggers

    def log(self, step: int, **scalars: float) -> None:
        for lg in self.loggers:
            lg.log(step, **scalars)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()


def make_logger(target: Union[PathLike, Sequence[PathLike]]) -> Logger:
    """``*.jsonl`` -> :class:`JSONLLogger`, ``*.csv`` -> :class:`CSVLogger`, ``tb:DIR`` or an
    existing folder -> :class:`TensorBoardLogger`; a list gives a :class:`MultiLogger`."""
    if isinstance(target, (list, tuple)):
        return MultiLogger(*(make_logger(t) for t in target))
    text = str(target)
    if text.startswith("tb:"):
        return TensorBoardLogger(text[3:])
    if text.endswith(".jsonl"):
        return JSONLLogger(text)
    if text.endswith(".csv"):
        return CSVLogger(text)
    if Path(text).is_dir():
        return TensorBoardLogger(text)
    raise ValueError(f"logger target {text!r}: expected a .jsonl or .csv file, 'tb:<folder>' or an existing folder")


def emit(logger: Any, row: Mapping[str, float], step_key: str = "step") -> None:
    """Send a history row to ``logger``: ``logger.log(row[step_key], **rest)`` for a :class:`Logger`,
    ``logger(row)`` for a plain callable, nothing for ``None``."""
    if logger is None:
        return
    if callable(getattr(logger, "log", None)):
        rest = {k: v for k, v in row.items() if k != step_key}
        logger.log(int(row[step_key]), **rest)
    elif callable(logger):
        logger(dict(row))
    else:
        raise TypeError(f"logger must have log(step, **scalars) or be callable, got {type(logger).__name__}")


def read_log(path: PathLike) -> List[Dict[str, Any]]:
    """Rows of a JSONL or CSV log (CSV ``extra`` merged back into each row)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            extra = json.loads(r.pop("extra") or "{}")
            rows.append({"step": int(r.pop("step")), **{k: float(v) for k, v in r.items() if v != ""}, **extra})
    return rows


def plot_log(path: PathLike, png: PathLike, keys: Optional[Sequence[str]] = None) -> bool:
    """One panel per scalar of a JSONL/CSV log (``keys``, default all) against ``step``; ``False``
    without matplotlib."""
    return plot_histories({Path(path).stem: read_log(path)}, png, keys)


def plot_histories(histories: Mapping[str, Sequence[Mapping[str, Any]]], png: PathLike,
                   keys: Optional[Sequence[str]] = None, max_panels: int = 9) -> bool:
    """Learning curves of several runs: one panel per scalar, one line per run, against ``step``.

    Args:
        histories: ``{run name: rows}`` with rows like ``Agent.history`` (``{"step": ..., name: value}``).
        keys: scalars to draw (default: the ``max_panels`` most common ones).
    Returns:
        ``False`` without matplotlib (the numbers stay in the logs), else ``True``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import io
    from collections import Counter

    from .data.io import atomic_write_bytes

    counts = Counter(k for rows in histories.values() for k in {k for r in rows for k in r} - {"step"})
    names = list(keys) if keys is not None else [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][:max_panels]
    if not names:
        raise ValueError("no scalars to plot")
    cols = min(3, len(names))
    rows_n = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 2.8 * rows_n), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for run, rows in histories.items():
            pts = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=run, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    if len(histories) <= 12:
        axes.flat[0].legend(fontsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
    return True
