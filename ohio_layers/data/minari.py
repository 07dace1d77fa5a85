"""Export ohio datasets to Minari and import Minari datasets (extra ``minari``: ``minari[hdf5]==0.5.3``).

A Minari episode stores ``T + 1`` observations for ``T`` steps; an ohio :class:`~ohio_layers.data.Dataset`
stores ``observations`` and ``next_observations`` per row. The two meet only when every episode is
*aligned*: ``next_observations[t] == observations[t + 1]`` inside the episode. Both
:func:`export_minari` and :func:`import_minari` check this on every episode and raise
:class:`MisalignedEpisodeError` (naming the episode, the array and the row) instead of storing a
shifted dataset. (A relabelled dataset with ``stride < k`` has overlapping windows and is never
aligned: relabel it with ``stride = k`` to export it.)

Layout of an exported episode (HDF5 backend)::

    observations   (T+1, do)   observations[rows] + next_observations[last row]
    actions        (T, da)     "actions" (low-level data) or "z" (relabelled data)
    rewards        (T,)        terminations (T,) = terminals   truncations (T,) = timeouts
    infos/pairs/<key>  (T+1, .)  every other array with a next_<key> partner (e.g. states)
    infos/steps/<key>  (T, .)    every other per-step array (episode_ids, z_true, residual, ...)

Dtypes are kept, so every array of every episode reads back bit-exact. The dataset's metadata
(behaviour policy, controller config, inverse settings and verification report of a relabelling)
goes into Minari's ``metadata.json`` under the key ``"ohio"``.

**No network access.** Only local Minari functions are called: ``create_dataset_from_buffers``
(with explicit observation/action spaces and ``env=None`` unless you name a registered env id),
``minari.load_dataset(id, download=False)`` and ``MinariDataset(path)``. Minari's remote functions
(``download_dataset``, ``load_dataset(download=True)``, ``list_remote_datasets``) are never used.
Where datasets live: ``root=`` if given (``MINARI_DATASETS_PATH`` is set to it for the duration of
the call and restored afterwards), else ``$MINARI_DATASETS_PATH``, else Minari's default
``~/.minari/datasets``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .._extras import require
from .dataset import Dataset, MisalignedEpisodeError, check_aligned, paired_keys
from .io import _jsonable

__all__ = ["MisalignedEpisodeError", "export_minari", "import_minari", "minari_datasets_root", "check_aligned"]

FORMAT_VERSION = 1
_FLAGS = {"rewards": "rewards", "terminals": "terminations", "timeouts": "truncations"}


@contextlib.contextmanager
def minari_datasets_root(root: Optional[Union[str, os.PathLike]]) -> Iterator[Path]:
    """Point ``MINARI_DATASETS_PATH`` at ``root`` (if given) for the block; yields the root in use."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")
    finally:
        if root is not None:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def _box(array: np.ndarray) -> Any:
    from gymnasium import spaces

    shape, dtype = array.shape[1:], array.dtype
    if dtype.kind == "b":
        return spaces.Box(False, True, shape, dtype=np.bool_)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return spaces.Box(info.min, info.max, shape, dtype=dtype)
    return spaces.Box(-np.inf, np.inf, shape, dtype=dtype)


def export_minari(
    dataset: Dataset,
    dataset_id: str,
    *,
    root: Optional[Union[str, os.PathLike]] = None,
    action_key: Optional[str] = None,
    observation_key: str = "observations",
    env: Optional[str] = None,
    algorithm_name: Optional[str] = None,
    author: str = "ohio_layers",
    description: Optional[str] = None,
    overwrite: bool = False,
) -> Path:
    """Write ``dataset`` as the local Minari dataset ``dataset_id``; returns its folder.

    Args:
        dataset: a low-level (``actions``) or relabelled (``z``) dataset with ``observations``,
            ``next_observations``, ``rewards``, ``terminals``, ``episode_ids`` (``timeouts`` optional).
        dataset_id: ``(namespace/)(env/)name-vN`` (Minari requires the version suffix).
        root: datasets root (see the module docstring); default ``$MINARI_DATASETS_PATH``.
        action_key: the array stored as Minari's actions (default ``"actions"`` if present, else ``"z"``).
        observation_key: the array stored as Minari's observations (its ``next_`` partner is required).
        env: a *registered* gymnasium id to record as the dataset's env (never instantiated here
            beyond what Minari does for its spec); default ``None`` (spaces from the arrays).
        algorithm_name: behaviour policy name (default: ``metadata["behaviour"]`` if present).
        overwrite: replace an existing dataset with the same id (else ``FileExistsError``).

    Raises:
        MisalignedEpisodeError: an episode's ``next_observations`` (or ``next_states``...) is not
            its next row's ``observations``.
    """
    minari = require("minari")
    from minari.data_collector.episode_buffer import EpisodeBuffer

    if len(dataset) == 0:
        raise ValueError("cannot export an empty dataset")
    if action_key is None:
        action_key = "actions" if "actions" in dataset else "z"
    dataset.require([observation_key, f"next_{observation_key}", action_key, "rewards", "terminals", "episode_ids"])
    if "-v" not in dataset_id.rsplit("/", 1)[-1] or not dataset_id.rsplit("-v", 1)[-1].isdigit():
        raise ValueError(f"dataset_id must end in -v<version>, e.g. 'ohio/reacher/expert-v0', got {dataset_id!r}")
    pairs = paired_keys(dataset)
    if observation_key not in pairs:
        raise KeyError(f"dataset has {observation_key!r} but no 'next_{observation_key}'")
    check_aligned(dataset, pairs)
    info_pairs = [k for k in pairs if k != observation_key]
    used = {observation_key, f"next_{observation_key}", action_key, *_FLAGS}
    steps = sorted(k for k in dataset.keys() if k not in used and k not in info_pairs
                   and not (k.startswith("next_") and k[5:] in info_pairs))
    buffers = []
    for i, rows in enumerate(dataset.episodes()):
        last = rows[-1:]
        obs = np.concatenate([dataset[observation_key][rows], dataset[f"next_{observation_key}"][last]])
        infos: Dict[str, Any] = {"pairs": {k: np.concatenate([dataset[k][rows], dataset[f"next_{k}"][last]]) for k in info_pairs},
                                 "steps": {k: dataset[k][rows] for k in steps}}
        infos = {g: v for g, v in infos.items() if v}
        timeouts = dataset["timeouts"][rows] if "timeouts" in dataset else np.zeros(len(rows), bool)
        buffers.append(EpisodeBuffer(id=i, observations=obs, actions=dataset[action_key][rows], rewards=dataset["rewards"][rows],
                                     terminations=dataset["terminals"][rows], truncations=timeouts, infos=infos or None))
    meta = dataset.metadata
    ohio = {"format_version": FORMAT_VERSION, "kind": "relabelled" if action_key == "z" else "low_level",
            "observation_key": observation_key, "action_key": action_key, "pairs": info_pairs, "steps": steps,
            "has_timeouts": "timeouts" in dataset,
            "metadata": json.loads(json.dumps(meta, sort_keys=True, default=_jsonable))}
    algo = algorithm_name or str(meta.get("behaviour") or meta.get("policy") or meta.get("inverter") or "unknown")
    with minari_datasets_root(root):
        from minari.storage import get_dataset_path

        folder = get_dataset_path(dataset_id)
        if folder.exists():
            if not overwrite:
                raise FileExistsError(f"Minari dataset {dataset_id!r} already exists at {folder}; pass overwrite=True")
            shutil.rmtree(folder)
        try:
            kwargs: Dict[str, Any] = dict(algorithm_name=algo, author=author, author_email="none@localhost",
                                          code_permalink="https://github.com/ohio-layers/ohio_layers",
                                          description=description or f"ohio_layers {ohio['kind']} dataset",
                                          data_format="hdf5", requirements=["ohio_layers"])
            if env is None:
                kwargs.update(observation_space=_box(dataset[observation_key]), action_space=_box(dataset[action_key]))
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "no eval_env/ref score given": expected for offline exports
                created = minari.create_dataset_from_buffers(dataset_id, buffers, env=env, **kwargs)
            created.storage.update_metadata({"ohio": ohio})
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a failed create leaves a folder that blocks a retry
            raise
    return folder


def _resolve(dataset_id_or_path: Union[str, os.PathLike], root: Optional[Union[str, os.PathLike]]) -> Tuple[Path, str]:
    p = Path(dataset_id_or_path)
    for cand in (p, p / "data"):
        if (cand / "metadata.json").is_file():
            return cand, str(p)
    if p.exists():
        raise FileNotFoundError(f"{p} is not a Minari dataset folder (no metadata.json in it or in its data/)")
    with minari_datasets_root(root) as r:
        from minari.storage import get_dataset_path

        data = get_dataset_path(str(dataset_id_or_path)) / "data"
    if not (data / "metadata.json").is_file():
        raise FileNotFoundError(f"no local Minari dataset {str(dataset_id_or_path)!r} under {r} (looked for {data}); "
                                f"ohio never downloads: fetch it with `minari download` yourself")
    return data, str(dataset_id_or_path)


def import_minari(dataset_id_or_path: Union[str, os.PathLike], *, root: Optional[Union[str, os.PathLike]] = None) -> Dataset:
    """Read a local Minari dataset (id or folder) into an ohio :class:`Dataset` (never downloads).

    Datasets written by :func:`export_minari` come back with every array and the metadata exactly
    as exported. Other Minari datasets (Box observations and actions) give ``observations``,
    ``next_observations`` (from the T+1 observations), ``actions``, ``rewards``, ``terminals``
    (= terminations), ``timeouts`` (= truncations and not terminations), ``episode_ids`` (Minari's
    episode ids) and ``metadata = {"minari": <Minari metadata>}``.

    Raises:
        MisalignedEpisodeError: an episode without exactly ``T + 1`` observations (or paired infos).
    """
    require("minari")
    from minari.dataset.minari_dataset import MinariDataset
    from minari.dataset.minari_storage import MinariStorage

    data_path, name = _resolve(dataset_id_or_path, root)
    raw = MinariStorage.read_raw_metadata(data_path)
    ohio = raw.get("ohio")
    obs_key = ohio["observation_key"] if ohio else "observations"
    act_key = ohio["action_key"] if ohio else "actions"
    cols: Dict[str, List[np.ndarray]] = {}
    add = lambda k, v: cols.setdefault(k, []).append(np.asarray(v))  # noqa: E731
    for ep in MinariDataset(data_path).iterate_episodes():
        T = len(ep.rewards)
        if isinstance(ep.observations, dict) or isinstance(ep.actions, dict):
            raise TypeError(f"{name}: episode {ep.id} has dict observations/actions; only Box spaces are supported")
        infos = ep.infos or {}
        seqs = {obs_key: ep.observations, **infos.get("pairs", {})}
        for k, v in seqs.items():
            if len(v) != T + 1:
                raise MisalignedEpisodeError(f"{name}: episode {ep.id} has {len(v)} {k!r} for {T} steps; need T+1 = {T + 1}")
            add(k, v[:-1])
            add(f"next_{k}", v[1:])
        add(act_key, ep.actions)
        add("rewards", ep.rewards)
        add("terminals", ep.terminations)
        steps = infos.get("steps", {})
        if ohio is None or ohio.get("has_timeouts", True):
            add("timeouts", ep.truncations if ohio else np.asarray(ep.truncations) & ~np.asarray(ep.terminations))
        if "episode_ids" not in steps:
            add("episode_ids", np.full(T, ep.id, dtype=np.int64))
        for k, v in steps.items():
            if len(v) != T:
                raise MisalignedEpisodeError(f"{name}: episode {ep.id} has {len(v)} rows of {k!r} for {T} steps")
            add(k, v)
    if not cols:
        raise ValueError(f"{name}: the Minari dataset has no episodes")
    metadata = ohio["metadata"] if ohio else {"minari": {k: v for k, v in raw.items() if isinstance(v, (str, int, float, list))}}
    return Dataset({k: np.concatenate(v) for k, v in cols.items()}, metadata)
