"""Mixed datasets: episodes recorded under several (withheld) controller settings.

Identify every episode on its own (:func:`~ohio_layers.inverse.identify.identify`, ``per="episode"``),
group the episodes whose estimates agree into settings (:func:`cluster_identifications`), and
relabel every episode with its own identified controller (:class:`PerEpisodeInverter`, which
plugs into :func:`~ohio_layers.inverse.relabel.relabel`). :func:`identify_and_relabel` does all
three; it is what ``ohio relabel --identify`` calls.

Two estimates agree when, for every parameter with a finite standard error in both (flagged for a
large error or not: a weak estimate still tells settings apart), their log-values differ by at most
``log(1 + rtol) + n_sigma * sqrt(se_a^2 + se_b^2)`` (relative standard errors). A cluster's value
is the precision-weighted mean of its members' log-estimates, with the pooled standard error
``1 / sqrt(sum of precisions)``; it counts as identified when that is ``<= max_rel_std_error`` --
so twenty episodes that each know a gain to 10 % pin it to about 2 %. An episode is relabelled
with its cluster's value when ``use_cluster`` and the cluster identifies it, else with its own.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.io import PathLike
from ..lowlevel.base import LowLevelController
from .identify import Identification, Identifier, UnknownLike, identify
from .relabel import Inverter, relabel
from .result import InverseResult


@dataclass
class SettingCluster:
    """Episodes whose identified parameters agree.

    Attributes:
        members: episode ids.
        estimate: ``{label: value}`` precision-weighted mean over members (finite standard errors;
            ``nan`` where the pooled relative standard error exceeds ``max_rel_std_error``).
        spread: ``{label: max relative deviation of a member from the estimate}``.
    """

    members: List[Any]
    estimate: Dict[str, float]
    spread: Dict[str, float]


def cluster_identifications(results: Sequence[Identification], rtol: float = 0.05, n_sigma: float = 3.0,
                            max_rel_std_error: float = 0.05) -> tuple:
    """Group episodes into settings; returns ``(labels (E,) int, [SettingCluster])``.

    Greedy clustering in the order given: an episode joins the cluster whose every member it agrees
    with (module docstring), comparing the most parameters; an episode that agrees with no cluster,
    or equally with several (it cannot identify what tells them apart), starts its own. Then each
    cluster's estimate is pooled.
    """
    if not results:
        raise ValueError("results must not be empty")
    labels_ = results[0].labels
    if any(r.labels != labels_ for r in results):
        raise ValueError("all identifications must have the same parameters (labels)")
    x = np.log(np.stack([r.estimate for r in results]))
    rel = np.stack([r.std_error / r.estimate for r in results])
    ok = np.isfinite(rel)
    tol = math.log1p(rtol)

    def agree(a: int, b: int) -> bool:
        both = ok[a] & ok[b]
        if not both.any():
            return False
        gap = np.abs(x[a] - x[b])[both]
        allowed = tol + n_sigma * np.sqrt(rel[a] ** 2 + rel[b] ** 2)[both]
        return bool((gap <= allowed).all())

    groups: List[List[int]] = []
    for i in range(len(results)):
        fits = [(int((ok[i] & ok[g].any(0)).sum()), c) for c, g in enumerate(groups) if all(agree(i, j) for j in g)]
        best = max((n for n, _ in fits), default=0)
        top = [c for n, c in fits if n == best]
        if len(top) == 1:
            groups[top[0]].append(i)
        else:  # none, or several settings it cannot tell apart (they differ where it identifies nothing)
            groups.append([i])
    labels = np.empty(len(results), np.int64)
    clusters = []
    for c, g in enumerate(groups):
        labels[g] = c
        est, spread = {}, {}
        for p, name in enumerate(labels_):
            idx = [i for i in g if ok[i, p]]
            if not idx:
                est[name], spread[name] = float("nan"), float("nan")
                continue
            w = 1.0 / np.maximum(rel[idx, p], 1e-12) ** 2
            mean = float(np.sum(w * x[idx, p]) / np.sum(w))
            if 1.0 / math.sqrt(float(np.sum(w))) > max_rel_std_error:
                est[name], spread[name] = float("nan"), float("nan")
                continue
            est[name] = math.exp(mean)
            spread[name] = float(np.max(np.abs(np.exp(x[idx, p] - mean) - 1.0)))
        clusters.append(SettingCluster([results[i].group for i in g], est, spread))
    return labels, clusters


def episode_controllers(controller: LowLevelController, results: Sequence[Identification],
                        labels: Optional[np.ndarray] = None, clusters: Optional[Sequence[SettingCluster]] = None,
                        strict: bool = True) -> Dict[Any, LowLevelController]:
    """``{episode id: identified controller}``; with ``labels``/``clusters`` an episode gets its cluster's
    pooled value for every parameter the cluster identifies (its own estimate otherwise).

    ``strict``: refuse (``ValueError``) an episode with a parameter neither it nor its cluster identifies.
    """
    out = {}
    for i, r in enumerate(results):
        if clusters is not None and labels is not None:
            pooled = clusters[int(labels[i])].estimate
            est = np.array([pooled[n] if np.isfinite(pooled[n]) else v for n, v in zip(r.labels, r.estimate)])
            ok = r.identifiable | np.array([np.isfinite(pooled[n]) for n in r.labels])
            r = r.with_estimate(est, ok)
        out[r.group] = r.apply(controller, strict=strict)
    return out


class PerEpisodeInverter:
    """An :data:`~ohio_layers.inverse.relabel.Inverter` that hands each window to its episode's inverter.

    Args:
        inverters: ``{episode id: inverter}`` (every episode of the relabelled data must be present).
        describe_as: the run's description (for :func:`relabel`'s resume fingerprint).
    """

    def __init__(self, inverters: Mapping[Any, Inverter], describe_as: str = "") -> None:
        if not inverters:
            raise ValueError("inverters must not be empty")
        self.inverters, self.describe_as = dict(inverters), describe_as

    def __call__(self, dataset: Dataset, starts: np.ndarray) -> InverseResult:
        ids = dataset["episode_ids"][starts]
        missing = sorted(set(ids.tolist()) - set(self.inverters))
        if missing:
            raise KeyError(f"no identified controller for episodes {missing[:10]}")
        parts, order = [], []
        for e in dict.fromkeys(ids.tolist()):
            rows = np.flatnonzero(ids == e)
            parts.append(self.inverters[e](dataset, starts[rows]))
            order.append(rows)
        res = InverseResult.cat(parts)
        inv = np.empty(len(starts), np.int64)
        inv[np.concatenate(order)] = np.arange(len(starts))
        index = torch.as_tensor(inv)
        return InverseResult(res.z[index], res.residual[index], res.converged[index], res.iterations[index])

    def describe(self) -> str:
        return f"PerEpisodeInverter({len(self.inverters)} episodes){self.describe_as}"


def identify_and_relabel(dataset: Dataset, controller: LowLevelController, unknowns: Sequence[UnknownLike],
                         make_inverter: Callable[[LowLevelController], Inverter], k: int, out_path: PathLike, *,
                         rtol: float = 0.05, use_cluster: bool = True, strict: bool = True,
                         identify_kwargs: Optional[Dict[str, Any]] = None, **relabel_kwargs: Any) -> Dict[str, Any]:
    """Identify every episode's controller, cluster, and relabel each episode with its own controller.

    Args:
        controller: the controller family (unknowns at their starting values).
        make_inverter: ``identified controller -> inverter`` (e.g. ``lambda c: ProblemInverter(
            InverseProblem(c, match="actions"), LevenbergMarquardt())``).
        k: low-level steps per high-level decision (as :func:`relabel`).
        identify_kwargs: passed to :func:`identify` (``k``, ``states_key``, ``identifier``, ...).
        relabel_kwargs: passed to :func:`relabel`.
    Returns:
        ``{"dataset", "report", "identifications", "labels", "clusters"}``.
    """
    results = identify(controller, dataset, unknowns, per="episode", **(identify_kwargs or {}))
    labels, clusters = cluster_identifications(results, rtol=rtol)
    ctrls = episode_controllers(controller, results, labels if use_cluster else None,
                                clusters if use_cluster else None, strict=strict)
    # the fingerprint covers what is applied: per-episode estimates, and the controllers built from them
    # (with use_cluster their values are cluster values, which also depend on rtol)
    h = hashlib.sha256(";".join(f"{r.group}:{sorted(r.as_dict().items())}" for r in results).encode())
    for e in sorted(ctrls):
        for name, t in ctrls[e].state_dict().items():
            h.update(f"|{e}:{name}:".encode() + t.detach().cpu().numpy().tobytes())
    digest = h.hexdigest()[:16]
    inverter = PerEpisodeInverter({e: make_inverter(c) for e, c in ctrls.items()}, describe_as=f"|identified:{digest}")
    if relabel_kwargs.get("description"):  # a caller's description replaces describe(): keep the identified values in it
        relabel_kwargs["description"] = f"{relabel_kwargs['description']}|{inverter.describe()}|cluster={use_cluster}"
    high, report = relabel(dataset, inverter, k, out_path, **relabel_kwargs)
    return {"dataset": high, "report": report, "identifications": results, "labels": labels, "clusters": clusters}


__all__ = ["SettingCluster", "cluster_identifications", "episode_controllers", "PerEpisodeInverter",
           "identify_and_relabel", "Identifier"]
