"""Hand an ohio dataset to d3rlpy (extra ``d3rlpy``: ``d3rlpy==2.8.0``, the last release that
keeps gymnasium 1.x; 2.8.1 pins gymnasium 1.0.0).

d3rlpy's ``MDPDataset`` takes no next observations: the next observation of row ``t`` is row
``t + 1`` of the same episode, and episodes end where ``terminals | timeouts`` is set. Hence:

* the dataset must be aligned (``next_observations[t] == observations[t + 1]`` inside each episode;
  :class:`~ohio_layers.data.MisalignedEpisodeError` otherwise -- relabelled data: ``stride = k``);
* every episode must end on a flag, or d3rlpy merges it with the next one: an episode whose last
  row is neither terminal nor timeout (AMoD data, a relabelled episode cut by the window grid)
  is ended with a timeout;
* a step flagged both terminal and timeout (gymnasium can emit both) is a termination
  (``timeouts &= ~terminals``; d3rlpy asserts otherwise);
* d3rlpy drops the last transition of every timeout episode (its next observation is unknown to
  it). With ``keep_last_transition=True`` (default) each timeout episode gets one padding row
  holding the final ``next_observation`` (action = the last action, reward 0) that carries the
  timeout, so d3rlpy sees every transition of ours with its true next observation and the padding
  row is never the start of a transition. Episode returns computed by d3rlpy are unchanged (reward 0).
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np

from .._extras import require
from .dataset import Dataset, check_aligned

__all__ = ["to_d3rlpy"]


def to_d3rlpy(dataset: Dataset, *, action_key: Optional[str] = None, observation_key: str = "observations",
              keep_last_transition: bool = True) -> Any:
    """``d3rlpy.dataset.MDPDataset`` with the episodes of ``dataset`` (see the module docstring).

    Args:
        action_key: ``"actions"`` if present, else ``"z"`` (relabelled data).
        observation_key: the array d3rlpy sees as observations (``observations`` or ``states``).
        keep_last_transition: pad timeout episodes so d3rlpy keeps their last transition.

    Returns:
        ``MDPDataset`` with float32 observations/rewards; ``transition_count`` equals ``len(dataset)``
        when ``keep_last_transition`` (else ``len(dataset)`` minus the number of timeout episodes).
    """
    d3rlpy = require("d3rlpy")
    if action_key is None:
        action_key = "actions" if "actions" in dataset else "z"
    dataset.require([observation_key, f"next_{observation_key}", action_key, "rewards", "terminals", "episode_ids"])
    if len(dataset) == 0:
        raise ValueError("cannot convert an empty dataset")
    check_aligned(dataset, [observation_key])
    obs, nxt = dataset[observation_key], dataset[f"next_{observation_key}"]
    act, rew = dataset[action_key], dataset["rewards"].astype(np.float32)
    term = dataset["terminals"].astype(bool)
    tout = dataset["timeouts"].astype(bool) if "timeouts" in dataset else np.zeros(len(dataset), bool)
    tout = tout & ~term
    parts: List[tuple] = []
    for rows in dataset.episodes():
        last = rows[-1]
        t_rows, o_rows = term[rows].copy(), tout[rows].copy()
        # flags before the episode's last row would split it in d3rlpy; ohio episodes end at id changes
        if (t_rows[:-1] | o_rows[:-1]).any():
            raise ValueError(f"episode {dataset['episode_ids'][last]!r} has a terminal/timeout flag before its last row")
        if not t_rows[-1]:
            o_rows[-1] = True
        if keep_last_transition and o_rows[-1]:
            o_rows[-1] = False
            parts.append((np.concatenate([obs[rows], nxt[last][None]]), np.concatenate([act[rows], act[last][None]]),
                          np.r_[rew[rows], np.float32(0)], np.r_[t_rows, False], np.r_[o_rows, True]))
        else:
            parts.append((obs[rows], act[rows], rew[rows], t_rows, o_rows))
    o, a, r, t, to = (np.concatenate([p[i] for p in parts]) for i in range(5))
    return d3rlpy.dataset.MDPDataset(observations=o.astype(np.float32), actions=a.astype(np.float32),
                                     rewards=r.astype(np.float32), terminals=t.astype(np.float32),
                                     timeouts=to.astype(np.float32))
