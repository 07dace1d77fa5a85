"""What an ``ohio amod`` run costs: per-unit CPU costs and the wall-time estimate printed before a run
(kept out of :mod:`~ohio_layers.experiments.amod`, which is at the size limit)."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .common import estimate_wall_time

#: Conservative CPU seconds per unit on the synthetic 3x3 city (9 regions), one torch thread: an OHIO IQL step, with
#: CQL / Cal-QL / SAC steps at 4x and end-to-end agents at 4x (the relative costs of ``_cost``); calibrated so that
#: the defaults come to ~1900 CPU-s, 1.4x the measured 11.2 min on 2 idle cores (README). ``decision``: one env step with
#: its LP (evaluation, collection, online fine-tuning); ``oracle_episode``: the episode LP.
COSTS: Dict[str, float] = {"ohio_step": 3.5e-3, "e2e_step": 14e-3, "decision": 5e-3, "oracle_episode": 1.0}
COST_SOURCE = ("ohio_layers.experiments.amod_cost.COSTS: defaults measured on 2 idle cores, synthetic city; scaled by "
               "regions/9 (OHIO, LP) and (regions/9)^2 (end-to-end) for bigger cities, an extrapolation")


def estimate(cfg: Any, workers: int, regions: int = 9) -> List[Tuple[str, float]]:
    """Estimated wall seconds of each phase of a run from scratch on ``workers`` processes (see ``COSTS``)."""
    f = regions / 9.0
    costs = {"ohio_step": COSTS["ohio_step"] * f, "e2e_step": COSTS["e2e_step"] * f * f,
             "decision": COSTS["decision"] * f, "oracle_episode": COSTS["oracle_episode"] * f}
    data = [{"oracle_episode": cfg.eval_episodes, "decision": 20 * (cfg.eval_episodes + cfg.episodes) * len(cfg.behaviours)}]
    offline, online = [], []
    for _ in range(len(cfg.behaviours) * len(cfg.seeds)):
        for kind in ("ohio", "e2e"):  # amod.KINDS
            unit = f"{kind}_step"
            for algo in cfg.algos:
                steps = cfg.iql_steps if algo == "iql" else 4 * cfg.cql_steps
                offline.append({unit: steps, "decision": 20 * cfg.eval_episodes})
            if cfg.finetune:
                evals = cfg.online_steps // cfg.eval_every + 1
                online.append({unit: 4 * cfg.online_steps,
                               "decision": cfg.online_steps + 20 * (evals * cfg.finetune_eval_episodes + cfg.eval_episodes)})
    phases = [("data + relabel", estimate_wall_time(data, costs, 1)), ("offline", estimate_wall_time(offline, costs, workers))]
    if online:
        phases.append(("fine-tune", estimate_wall_time(online, costs, workers)))
    return phases
