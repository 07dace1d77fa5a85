"""AMoD city scenarios: a built-in synthetic city and a loader for the reference JSON schema.

A :class:`Scenario` holds everything the simulator needs as dense, step-indexed arrays:
mean trip requests ``demand_rate (T, n, n)`` per step, fares ``price (T, n, n)``, trip
durations ``trip_time (T, n, n)`` and rebalancing durations ``reb_time (n, n)`` in steps, the
initial idle fleet ``initial_idle (n,)`` and the GNN adjacency ``topology (2, E_topo)``.

Reference JSON schema (OHIO / gnn-rl-for-amod ``scenario_*.json``, digest §1.1)::

    {"nlat": int, "nlon": int,
     "demand":  [{"time_stamp": minute of day, "origin", "destination",
                  "demand": trips per minute, "travel_time": minutes, "price": fare}, ...],
     "totalAcc": [{"hour", "acc": fleet size}, ...],
     "rebTime":  [{"time_stamp": hour, "origin", "destination", "reb_time": minutes}, ...],
     "topology_graph": [{"i", "j"}, ...]}

:func:`load_scenario_json` aggregates it into steps of ``step_minutes`` exactly as §1.2 describes
(rates summed over the step and scaled by ``demand_ratio``; demand-weighted fares and trip
times; ``max(1, round(minutes / step))`` durations; initial idle ``floor(acc / n)`` per region).
:func:`synthetic_reference_json` writes a synthetic city in that schema (the shipped
``ohio_layers/data/scenarios/tiny_city.json`` was made with it).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np

__all__ = ["Scenario", "synthetic_city", "load_scenario_json", "synthetic_reference_json", "SCENARIO_DIR",
           "builtin_scenario_path", "ScenarioFileError", "CITY_PRESETS", "city_preset", "validate_reference_json",
           "scenario_city"]

#: Per-city loader settings of the paper's code (digest §1.2): minutes per step, demand multiplier, start hour.
CITY_PRESETS: Dict[str, Dict[str, Any]] = {
    "nyc-brooklyn": {"step_minutes": 4.0, "demand_ratio": 9.0, "json_hr": 19},
    "shenzhen-downtown-west": {"step_minutes": 3.0, "demand_ratio": 2.5, "json_hr": 8},
}


def city_preset(name: str) -> Dict[str, Any]:
    """The :data:`CITY_PRESETS` entry ``name`` (a copy), or ``ValueError`` naming the presets."""
    if name not in CITY_PRESETS:
        raise ValueError(f"unknown city preset {name!r}; presets are {sorted(CITY_PRESETS)}")
    return dict(CITY_PRESETS[name])


class ScenarioFileError(ValueError):
    """A city JSON that breaks the reference schema; the message names the file and the record.

    Attributes: ``path`` (the file), ``record`` (e.g. ``"demand[12]"``, ``"totalAcc"``, ``"nlat"``).
    """

    def __init__(self, path: Union[str, Path], record: str, problem: str) -> None:
        self.path, self.record = str(path), record
        super().__init__(f"{path}: {record}: {problem}")


_RECORD_FIELDS = {
    "demand": ("time_stamp", "origin", "destination", "demand", "travel_time", "price"),
    "totalAcc": ("hour", "acc"),
    "rebTime": ("time_stamp", "origin", "destination", "reb_time"),
    "topology_graph": ("i", "j"),
}
_INTEGER_FIELDS = {"origin", "destination", "hour", "acc", "i", "j"}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(float(v))


def validate_reference_json(data: Any, path: Union[str, Path] = "<scenario>") -> int:
    """Check a parsed city JSON against the reference schema; returns the region count ``n``.

    Raises :class:`ScenarioFileError` (file + record) for: missing top-level keys, a non-integer or
    non-positive ``nlat``/``nlon``, a record list given as anything but a list (e.g. ``demand`` as a
    dict), an empty ``demand``/``totalAcc``/``rebTime``, a record missing a field (e.g. ``price``) or
    with a non-numeric / non-integer value, a region outside ``[0, n)``, a negative demand, price or
    travel time, a negative ``reb_time``, and a fleet (``totalAcc`` ``acc``) smaller than ``n``. No
    value is ever fixed up silently.
    """
    if not isinstance(data, dict):
        raise ScenarioFileError(path, "<top level>", f"must be a JSON object, got {type(data).__name__}")
    missing = [k for k in ("nlat", "nlon", "demand", "totalAcc", "rebTime") if k not in data]
    if missing:
        raise ScenarioFileError(path, "<top level>", f"missing keys {missing}")
    for key in ("nlat", "nlon"):
        if not _is_int(data[key]) or data[key] < 1:
            raise ScenarioFileError(path, key, f"must be a positive integer, got {data[key]!r}")
    n = int(data["nlat"]) * int(data["nlon"])
    if n < 2:
        raise ScenarioFileError(path, "nlat * nlon", f"a city needs at least 2 regions, got {n}")
    for key, fields in _RECORD_FIELDS.items():
        if key not in data:
            continue
        records = data[key]
        if not isinstance(records, list):
            raise ScenarioFileError(path, key, f"must be a list of records {{{', '.join(fields)}}}, got a {type(records).__name__}")
        if not records and key != "topology_graph":
            raise ScenarioFileError(path, key, "is empty")
        for i, r in enumerate(records):
            where = f"{key}[{i}]"
            if not isinstance(r, dict):
                raise ScenarioFileError(path, where, f"must be a record {{{', '.join(fields)}}}, got {r!r}")
            absent = [f for f in fields if f not in r]
            if absent:
                raise ScenarioFileError(path, where, f"{r} is missing {absent}")
            for f in fields:
                v = r[f]
                if not _is_number(v) or (f in _INTEGER_FIELDS and not _is_int(v)):
                    kind = "an integer" if f in _INTEGER_FIELDS else "a finite number"
                    raise ScenarioFileError(path, where, f"{f!r} must be {kind}, got {v!r}")
            for f in ("origin", "destination", "i", "j"):
                if f in r and not 0 <= r[f] < n:
                    raise ScenarioFileError(path, where, f"{f!r} = {r[f]} is not a region in [0, {n})")
            for f in ("demand", "price", "travel_time", "reb_time"):
                if f in r and r[f] < 0:
                    raise ScenarioFileError(path, where, f"negative {f!r} = {r[f]}")
            if key == "totalAcc" and r["acc"] < n:
                raise ScenarioFileError(path, where, f"fleet acc = {r['acc']} at hour {r['hour']} is smaller than the {n} "
                                                     f"regions (every region starts with floor(acc / n) vehicles)")
    return n


SCENARIO_DIR = Path(__file__).resolve().parents[2] / "data" / "scenarios"


def builtin_scenario_path(name: str = "tiny_city") -> Path:
    """Path of a JSON scenario shipped in ``ohio_layers/data/scenarios``."""
    p = SCENARIO_DIR / f"{name}.json"
    if not p.exists():
        raise FileNotFoundError(f"no built-in scenario {name!r}; available: {sorted(q.stem for q in SCENARIO_DIR.glob('*.json'))}")
    return p


@dataclass
class Scenario:
    """A city: ``n`` regions, ``T`` steps of demand, fixed rebalancing times.

    Attributes:
        demand_rate: ``(T, n, n)`` mean trip requests from i to j starting in step t.
        price: ``(T, n, n)`` fare per served trip.
        trip_time: ``(T, n, n)`` int, trip duration in steps (>= 1).
        reb_time: ``(n, n)`` int, empty-vehicle travel time in steps (>= 1 off the diagonal, 0 on it).
        initial_idle: ``(n,)`` int, idle vehicles per region at the start of an episode.
        beta: operating cost per vehicle per step of driving (passenger trips and rebalancing).
        horizon: decisions per episode.
        topology: ``(2, E_topo)`` int, directed region adjacency for GNN message passing.
        coords: ``(n, 2)`` region centres (for plots), or ``None``.
        step_minutes: minutes per step (metadata).
    """

    name: str
    demand_rate: np.ndarray
    price: np.ndarray
    trip_time: np.ndarray
    reb_time: np.ndarray
    initial_idle: np.ndarray
    beta: float
    horizon: int = 20
    topology: Optional[np.ndarray] = None
    coords: Optional[np.ndarray] = None
    step_minutes: float = 3.0
    info: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.demand_rate = np.asarray(self.demand_rate, dtype=np.float64)
        self.price = np.asarray(self.price, dtype=np.float64)
        self.trip_time = np.asarray(self.trip_time, dtype=np.int64)
        self.reb_time = np.asarray(self.reb_time, dtype=np.int64)
        self.initial_idle = np.asarray(self.initial_idle, dtype=np.int64)
        if self.demand_rate.ndim != 3 or self.demand_rate.shape[1] != self.demand_rate.shape[2]:
            raise ValueError(f"demand_rate must have shape (T, n, n), got {self.demand_rate.shape}")
        T, n, _ = self.demand_rate.shape
        for name in ("price", "trip_time"):
            if getattr(self, name).shape != (T, n, n):
                raise ValueError(f"{name} must have shape ({T}, {n}, {n}), got {getattr(self, name).shape}")
        if self.reb_time.shape != (n, n):
            raise ValueError(f"reb_time must have shape ({n}, {n}), got {self.reb_time.shape}")
        if self.initial_idle.shape != (n,):
            raise ValueError(f"initial_idle must have shape ({n},), got {self.initial_idle.shape}")
        if n < 2:
            raise ValueError(f"a scenario needs at least 2 regions, got {n}")
        if not np.isfinite(self.demand_rate).all() or (self.demand_rate < 0).any():
            raise ValueError("demand_rate must be finite and non-negative")
        if not np.isfinite(self.price).all() or (self.price < 0).any():
            raise ValueError("price must be finite and non-negative")
        if (self.trip_time < 1).any():
            raise ValueError("trip_time must be >= 1 step everywhere")
        off = ~np.eye(n, dtype=bool)
        if (self.reb_time[off] < 1).any():
            raise ValueError("reb_time must be >= 1 step between different regions")
        if (self.initial_idle < 0).any():
            raise ValueError(f"initial_idle must be non-negative counts, got {self.initial_idle.tolist()}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if T < self.horizon + 1:
            raise ValueError(f"demand covers {T} steps; an episode of horizon {self.horizon} needs at least {self.horizon + 1}")
        if self.topology is None:
            i, j = np.nonzero(off)
            self.topology = np.stack([i, j])
        self.topology = np.asarray(self.topology, dtype=np.int64)
        if self.topology.ndim != 2 or self.topology.shape[0] != 2 or (self.topology.size and
                                                                      (self.topology.min() < 0 or self.topology.max() >= n)):
            raise ValueError(f"topology must be a (2, E) array of region indices in [0, {n}), got shape {self.topology.shape}")

    @property
    def n_regions(self) -> int:
        return self.demand_rate.shape[1]

    @property
    def n_steps(self) -> int:
        """``T``, steps of demand data (>= horizon + 1)."""
        return self.demand_rate.shape[0]

    @property
    def fleet_size(self) -> int:
        return int(self.initial_idle.sum())

    def graph(self) -> Any:
        """Complete rebalancing ``networkx.DiGraph`` on the regions, edge attribute ``time`` (steps)."""
        import networkx as nx

        g = nx.DiGraph()
        n = self.n_regions
        g.add_nodes_from(range(n))
        for i in range(n):
            for j in range(n):
                if i != j:
                    g.add_edge(i, j, time=float(self.reb_time[i, j]))
        return g

    def expected_demand(self, t: int, lookahead: int = 1) -> np.ndarray:
        """Mean outgoing requests per region over steps ``t .. t+lookahead-1`` (clipped at ``T``), ``(n,)``."""
        hi = min(self.n_steps, t + lookahead)
        if t >= hi:
            return np.zeros(self.n_regions)
        return self.demand_rate[t:hi].sum((0, 2))


# ---------------------------------------------------------------------------------- synthetic city
def _city_layout(nlat: int, nlon: int, rng: np.random.Generator, spacing_km: float):
    n = nlat * nlon
    rows, cols = np.divmod(np.arange(n), nlon)
    coords = np.stack([rows * spacing_km, cols * spacing_km], 1).astype(np.float64)
    centre = coords.mean(0)
    dist_c = np.linalg.norm(coords - centre, axis=1)
    business = np.exp(-dist_c / max(spacing_km * max(nlat, nlon) / 3, 1e-9)) * rng.uniform(0.7, 1.3, n)
    residential = (0.4 + dist_c / max(dist_c.max(), 1e-9)) * rng.uniform(0.7, 1.3, n)
    topo = [(i, j) for i in range(n) for j in range(n)
            if i != j and abs(rows[i] - rows[j]) + abs(cols[i] - cols[j]) == 1]
    topology = np.array(topo, dtype=np.int64).T if topo else np.zeros((2, 0), dtype=np.int64)
    return coords, business / business.sum(), residential / residential.sum(), topology


def _minutes_between(coords: np.ndarray, speed_km_per_min: float, rng: np.random.Generator) -> np.ndarray:
    manhattan = np.abs(coords[:, None, :] - coords[None, :, :]).sum(-1)
    minutes = 2.0 + manhattan / speed_km_per_min
    asym = rng.uniform(0.9, 1.1, minutes.shape)  # one-way streets, congestion
    return minutes * asym


def _rate_per_minute(minute: np.ndarray, business: np.ndarray, residential: np.ndarray, base: float,
                     background: np.ndarray) -> np.ndarray:
    """Trips per minute ``(len(minute), n, n)``: morning commute, evening return, background."""
    h = np.asarray(minute, dtype=np.float64)[:, None, None] / 60.0
    morning = np.exp(-0.5 * ((h - 8.25) / 1.0) ** 2)
    evening = np.exp(-0.5 * ((h - 17.75) / 1.2) ** 2)
    commute = residential[:, None] * business[None, :]
    back = business[:, None] * residential[None, :]
    n = len(business)
    return base * n * n * (morning * commute + evening * back + 0.35 * background[None])


def synthetic_city(
    nlat: int = 3,
    nlon: int = 3,
    horizon: int = 20,
    step_minutes: float = 3.0,
    start_hour: float = 7.5,
    trips_per_minute: float = 8.0,
    fleet_per_trip: float = 1.3,
    beta: float = 0.5,
    spacing_km: float = 2.0,
    speed_km_per_min: float = 0.5,
    lookahead_steps: Optional[int] = None,
    seed: int = 0,
) -> Scenario:
    """A grid city of ``nlat x nlon`` regions with time-of-day demand (deterministic given ``seed``).

    Business regions sit in the centre and residential ones at the edge; requests follow a gravity
    model with a morning peak (residential -> business, 08:15) and an evening peak (the way back,
    17:45) over a uniform background. Travel times are Manhattan distances at ``speed_km_per_min``
    plus 2 minutes, +-10 % asymmetry; fares are ``2.5 + 1.2 * minutes`` with +-10 % noise. The fleet
    is ``fleet_per_trip`` times the mean number of vehicles busy with trips, spread evenly.

    Args:
        trips_per_minute: average total requests per minute over the whole city.
        beta: operating cost per vehicle per **minute** of driving (converted to per step).
        lookahead_steps: demand is generated for ``max(2 horizon, horizon + lookahead_steps + 1)`` steps.
    """
    for name, v in (("nlat", nlat), ("nlon", nlon), ("horizon", horizon)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"synthetic_city: {name} must be an int >= 1, got {v!r}")
    if nlat * nlon < 2:
        raise ValueError(f"synthetic_city: the city needs at least 2 regions, got nlat={nlat} x nlon={nlon}")
    rng = np.random.default_rng(seed)
    n = nlat * nlon
    coords, business, residential, topology = _city_layout(nlat, nlon, rng, spacing_km)
    minutes = _minutes_between(coords, speed_km_per_min, rng)
    np.fill_diagonal(minutes, 2.0 + 0.5 * spacing_km / speed_km_per_min)
    T = max(2 * horizon, horizon + (lookahead_steps or 6) + 1)
    background = rng.uniform(0.5, 1.5, (n, n)) / (n * n)
    per_minute = np.arange(int(round(T * step_minutes)))
    rate = _rate_per_minute(60.0 * start_hour + per_minute, business, residential, 1.0, background)
    steps = (per_minute // step_minutes).astype(int)
    demand = np.zeros((T, n, n))
    np.add.at(demand, steps, rate)
    demand *= trips_per_minute * step_minutes / demand.sum(axis=(1, 2)).mean()
    fare = (2.5 + 1.2 * minutes) * rng.uniform(0.9, 1.1, (n, n))
    trip_steps = np.maximum(1, np.round(minutes / step_minutes)).astype(np.int64)
    reb = trip_steps.copy()
    np.fill_diagonal(reb, 0)
    busy = (demand.sum((1, 2)).mean()) * float((trip_steps * demand.mean(0)).sum() / max(demand.mean(0).sum(), 1e-12))
    fleet = int(math.ceil(fleet_per_trip * busy))
    idle0 = np.full(n, fleet // n, dtype=np.int64)
    idle0[: fleet - idle0.sum()] += 1
    return Scenario(
        name=f"synthetic_{nlat}x{nlon}_seed{seed}", demand_rate=demand, price=np.broadcast_to(fare, (T, n, n)).copy(),
        trip_time=np.broadcast_to(trip_steps, (T, n, n)).copy(), reb_time=reb, initial_idle=idle0,
        beta=beta * step_minutes, horizon=horizon, topology=topology, coords=coords, step_minutes=step_minutes,
        info={"generator": "synthetic_city", "seed": seed, "nlat": nlat, "nlon": nlon, "start_hour": start_hour},
    )


# ---------------------------------------------------------------------------------- reference JSON
def load_scenario_json(
    path: Union[str, Path],
    json_hr: Optional[int] = None,
    step_minutes: Optional[float] = None,
    demand_ratio: Optional[float] = None,
    beta: float = 0.5,
    horizon: int = 20,
    lookahead_steps: int = 6,
    preset: Optional[str] = None,
) -> Scenario:
    """Load a city file in the reference schema (module docstring) and aggregate it into steps.

    The file is checked first (:func:`validate_reference_json`; :class:`ScenarioFileError` names
    the file and the record). Explicit arguments override the ``preset``'s.

    Args:
        path: the JSON file.
        preset: a :data:`CITY_PRESETS` name (``nyc-brooklyn``: 4-minute steps, demand x9, 19 h;
            ``shenzhen-downtown-west``: 3 minutes, x2.5, 8 h). Without a preset: 3 minutes, x1.
        json_hr: hour of day at which the episode starts (default: the earliest demand hour).
        step_minutes: minutes per step (reference: 3 for training).
        demand_ratio: multiplies every request rate (reference: NYC 9, Shenzhen 2.5).
        beta: operating cost per vehicle per minute (per step: ``beta * step_minutes``).
        horizon: decisions per episode (reference: 20).
        lookahead_steps: demand is kept for ``max(2 horizon, horizon + lookahead_steps + 1)`` steps.
    """
    path = Path(path)
    settings = {"step_minutes": 3.0, "demand_ratio": 1.0, "json_hr": None, **(city_preset(preset) if preset else {})}
    for key, value in (("step_minutes", step_minutes), ("demand_ratio", demand_ratio), ("json_hr", json_hr)):
        if value is not None:
            settings[key] = value
    step_minutes, demand_ratio, json_hr = float(settings["step_minutes"]), float(settings["demand_ratio"]), settings["json_hr"]
    if not (step_minutes > 0 and demand_ratio > 0):
        raise ValueError(f"step_minutes and demand_ratio must be > 0, got {step_minutes} and {demand_ratio}")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ScenarioFileError(path, f"line {err.lineno}", f"not valid JSON ({err.msg})") from None
    n = validate_reference_json(data, path)
    records = data["demand"]
    if json_hr is None:
        json_hr = int(min(int(r["time_stamp"]) for r in records) // 60)
    s0 = 60 * json_hr
    T = max(2 * horizon, horizon + lookahead_steps + 1)
    lam = np.zeros((T, n, n))
    pw = np.zeros((T, n, n))
    tw = np.zeros((T, n, n))
    for r in records:
        k = int((int(r["time_stamp"]) - s0) // step_minutes)
        o, d = int(r["origin"]), int(r["destination"])
        if not (0 <= o < n and 0 <= d < n):
            raise ValueError(f"{path}: demand record has region {(o, d)} outside [0, {n})")
        if 0 <= k < T:
            rate = float(r["demand"]) * demand_ratio
            lam[k, o, d] += rate
            pw[k, o, d] += rate * float(r["price"])
            tw[k, o, d] += rate * float(r["travel_time"])
    if lam.sum() == 0:
        raise ValueError(f"{path}: no demand between {s0} and {s0 + T * step_minutes} minutes (json_hr={json_hr})")
    reb_min = np.full((n, n), np.nan)
    hours = sorted({int(r["time_stamp"]) for r in data["rebTime"]})
    hour = json_hr if json_hr in hours else min(hours, key=lambda h: abs(h - json_hr))
    for r in data["rebTime"]:
        if int(r["time_stamp"]) == hour:
            reb_min[int(r["origin"]), int(r["destination"])] = float(r["reb_time"])
    off = ~np.eye(n, dtype=bool)
    if np.isnan(reb_min[off]).any():
        bad = np.argwhere(np.isnan(reb_min) & off)[:5].tolist()
        raise ValueError(f"{path}: rebTime has no entry for region pairs {bad} at hour {hour}")
    reb = np.zeros((n, n), dtype=np.int64)
    reb[off] = np.maximum(1, np.round(reb_min[off] / step_minutes))
    with np.errstate(invalid="ignore", divide="ignore"):
        price = np.where(lam > 0, pw / lam, 0.0)
        minutes = np.where(lam > 0, tw / lam, np.nan)
    trip = np.where(np.isnan(minutes), np.maximum(reb, 1)[None], np.maximum(1, np.round(np.nan_to_num(minutes) / step_minutes)))
    fleet_hour = json_hr + round(step_minutes / 2 * horizon / 60)
    acc_by_hour = {int(r["hour"]): int(r["acc"]) for r in data["totalAcc"]}
    h = fleet_hour if fleet_hour in acc_by_hour else min(acc_by_hour, key=lambda x: abs(x - fleet_hour))
    idle0 = np.full(n, acc_by_hour[h] // n, dtype=np.int64)
    topo = data.get("topology_graph")
    topology = np.array([[int(e["i"]) for e in topo], [int(e["j"]) for e in topo]], dtype=np.int64) if topo else None
    return Scenario(name=path.stem, demand_rate=lam, price=price, trip_time=trip.astype(np.int64), reb_time=reb,
                    initial_idle=idle0, beta=beta * step_minutes, horizon=horizon, topology=topology,
                    step_minutes=step_minutes,
                    info={"source": str(path), "json_hr": json_hr, "demand_ratio": demand_ratio, "fleet_hour": h,
                          "preset": preset})


def scenario_city(path: Union[str, Path], preset: Optional[str] = None,
                  city: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """``{**preset, **city, "path": path}``: the ``AMoDEnv`` scenario settings of a city file, after loading
    it once (a broken file or an unknown key fails here, not after data collection)."""
    if not Path(path).is_file():
        raise ValueError(f"scenario {str(path)!r}: no such file")
    kwargs = {**(city_preset(preset) if preset is not None else {}), **{k: v for k, v in (city or {}).items() if k != "path"}}
    try:
        load_scenario_json(path, **kwargs)
    except TypeError as err:
        raise ValueError(f"city holds a key load_scenario_json does not take: {err}") from None
    return {**kwargs, "path": str(path)}


def synthetic_reference_json(
    nlat: int = 2,
    nlon: int = 2,
    start_hour: int = 8,
    minutes: int = 120,
    trips_per_minute: float = 2.0,
    fleet: int = 60,
    seed: int = 0,
    spacing_km: float = 2.0,
    speed_km_per_min: float = 0.5,
) -> Dict[str, Any]:
    """A synthetic city in the reference JSON schema (per-minute records, 15-minute blocks).

    Rates are piecewise constant over 15-minute blocks and rounded to multiples of 1/15 as in
    the reference files; OD pairs whose rate rounds to zero have no records.
    """
    rng = np.random.default_rng(seed)
    n = nlat * nlon
    coords, business, residential, topology = _city_layout(nlat, nlon, rng, spacing_km)
    mins = _minutes_between(coords, speed_km_per_min, rng)
    background = rng.uniform(0.5, 1.5, (n, n)) / (n * n)
    s0 = 60 * start_hour
    block_starts = np.arange(s0, s0 + minutes, 15)
    rate = _rate_per_minute(block_starts + 7.5, business, residential, 1.0, background)
    rate *= trips_per_minute / rate.sum((1, 2)).mean()
    rate = np.round(rate * 15) / 15
    fare = np.round((2.5 + 1.2 * mins) * rng.uniform(0.9, 1.1, (n, n)), 2)
    demand = []
    for b, start in enumerate(block_starts):
        for m in range(int(start), int(min(start + 15, s0 + minutes))):
            for o in range(n):
                for d in range(n):
                    if o != d and rate[b, o, d] > 0:
                        demand.append({"time_stamp": m, "origin": o, "destination": d,
                                       "demand": round(float(rate[b, o, d]), 6),
                                       "travel_time": int(round(mins[o, d])), "price": float(fare[o, d])})
    hours = sorted({int(m // 60) for m in range(s0, s0 + minutes)})
    reb = [{"time_stamp": h, "origin": o, "destination": d, "reb_time": round(float(mins[o, d] if o != d else 1.0), 2)}
           for h in hours for o in range(n) for d in range(n)]
    return {
        "nlat": nlat, "nlon": nlon, "demand": demand,
        "totalAcc": [{"hour": h, "acc": int(fleet)} for h in hours],
        "rebTime": reb,
        "topology_graph": [{"i": int(i), "j": int(j)} for i, j in topology.T],
    }
