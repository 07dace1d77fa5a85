"""``ohio relabel``: relabel a user's dataset with a user's (or a built-in) low-level controller.

    ohio relabel DATA --controller SPEC --out OUT [--dynamics SPEC] [--inverse analytic|lm|adam|cem|amortized]
                 [--k K] [--stride S] [--tolerance TOL] [--minari-root DIR] [--identify NAMES [--allow-unidentified]]

* DATA: an ohio ``.npz``, or a local Minari dataset id or folder (never downloaded).
* ``--controller``: a built-in with parameters or ``package.module:ClassName[:key=value,...]`` for a
  :class:`~ohio_layers.lowlevel.LowLevelController` subclass (grammar: :mod:`ohio_layers.inverse.spec`).
  Built-ins:

  - ``lqr:horizon=5,Q=[10,10,1,1],R=0.1,z_bound=25`` -- the reacher's LQR on MuJoCo finite-difference
    linearisations (extra ``mujoco``); inverted through an :class:`~ohio_layers.inverse.InverseProblem`.
  - ``osc:kp=150,damping_ratio=1,output_max=[...]`` -- robosuite's OSC_POSE (k = 1, teacher forcing on the
    recorded sub-step torques, :class:`~ohio_layers.inverse.osc_relabel.OSCRelabeler`).
  - ``min_cost_flow:graph=city.json[,step_minutes=..,demand_ratio=..,json_hr=..]`` -- AMoD rebalancing
    (k = 1, analytic flow inverse :class:`~ohio_layers.inverse.FlowInverter`).
* ``--dynamics`` (problem-based controllers only): ``context`` (the ``A, B`` the controller puts in its
  context, e.g. the LQR's linearisation), ``actions`` (no model: match the recorded actions on the
  recorded states), or ``module:Class[:args]`` for a :class:`~ohio_layers.lowlevel.Dynamics` or a
  linearisation ``state -> (A, B)``. Default: ``context`` if the controller's context has ``A`` and
  ``B``, else ``actions``.
* OUT: ``*.npz`` writes an ohio dataset; anything else is a Minari id (``ns/name-v0``) the relabelled
  dataset is exported to. Next to it (Minari: inside its folder): ``<stem>.report.json`` (the
  verification report: residual statistics, share reproduced within the tolerance, the spec) and
  ``<stem>.residuals.png``. Interrupted runs resume from ``<npz>.parts/``.
* ``--identify kp,damping_ratio``: the controller's parameters are not known (a log that does not say
  which gains or cost weights ran, or mixes several): the named parameters are identified per
  episode from the data (:func:`~ohio_layers.inverse.mixed.identify_and_relabel`: variable
  projection, z eliminated), episodes that agree are clustered into settings, and every episode is
  relabelled with its own identified controller; the spec's values are only the starting point.
  Names: the OSC's ``kp`` / ``damping_ratio`` (one value per axis group, position / orientation), or
  any floating-point parameter or buffer of a problem controller (a square matrix such as the LQR's
  ``Q`` contributes its diagonal, anything else every entry). The report JSON gets an
  ``identification`` section (per-episode estimates, standard errors, flags, clusters). An episode with
  a parameter the data cannot identify is refused unless ``--allow-unidentified``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..data import Dataset
from ..inverse.spec import Spec, SpecError, call_with_spec, import_object, parse_spec, split_kwargs
from .common import pyplot, save_figure, write_json

INVERSES = ("analytic", "lm", "adam", "cem", "amortized")
BUILTIN_CONTROLLERS = ("lqr", "osc", "min_cost_flow")


# ------------------------------------------------------------------------------------------- data
def load_data(data: str, minari_root: Optional[str] = None) -> Tuple[Dataset, str]:
    """``(dataset, "npz" | "minari")`` from an ``.npz`` path or a Minari id / folder."""
    if data.endswith(".npz"):
        if not Path(data).is_file():
            raise FileNotFoundError(f"DATA {data!r}: no such .npz file")
        return Dataset.load(data), "npz"
    from ..data.minari import import_minari

    return import_minari(data, root=minari_root), "minari"


# ------------------------------------------------------------------------------------------- controllers
def _osc(spec: Spec) -> Any:
    from ..envs.manipulation import ControllerSetting
    from ..inverse.osc_relabel import OSCRelabeler

    def setting(kp: Any = 150.0, damping_ratio: Any = 1.0, output_max: Any = (0.05, 0.05, 0.05, 0.5, 0.5, 0.5),
                name: str = "custom") -> Any:
        return ControllerSetting(name, kp, damping_ratio, output_max)

    return OSCRelabeler(call_with_spec(setting, spec))


def _min_cost_flow(spec: Spec) -> Any:
    from ..envs.amod.scenario import load_scenario_json
    from ..inverse import FlowInverter
    from ..lowlevel import MinCostFlowController

    taken, rest = split_kwargs(spec, ("eps",))
    if "graph" not in rest.kwargs:
        raise SpecError(f"controller spec {spec.text!r}: min_cost_flow needs graph=<city.json>")
    graph = rest.kwargs["graph"]
    if not Path(str(graph)).is_file():
        raise SpecError(f"controller spec {spec.text!r}: graph file {graph!r} does not exist")
    scenario = call_with_spec(lambda graph, **kw: load_scenario_json(graph, **kw), rest)
    return FlowInverter(MinCostFlowController(scenario.graph(), cost_key="time"), eps=float(taken.get("eps", 0.0)))


def build_controller(text: str) -> Tuple[str, Any, Spec]:
    """``(kind, object, spec)``: kind ``"problem"`` (a LowLevelController) or ``"inverter"`` (osc, flows)."""
    from ..lowlevel import LowLevelController

    spec = parse_spec(text, "controller")
    if spec.name is not None:
        if spec.name == "lqr":
            from ..envs.reacher.policies import make_reacher_lqr

            return "problem", call_with_spec(make_reacher_lqr, spec), spec
        if spec.name == "osc":
            return "inverter", _osc(spec), spec
        if spec.name == "min_cost_flow":
            return "inverter", _min_cost_flow(spec), spec
        raise SpecError(f"controller spec {text!r}: unknown built-in {spec.name!r}; built-ins are {list(BUILTIN_CONTROLLERS)} "
                        f"(or give package.module:ClassName)")
    obj = import_object(spec, "controller")
    if isinstance(obj, type) and not issubclass(obj, LowLevelController):
        raise SpecError(f"controller spec {text!r}: {spec.target} is not a LowLevelController subclass "
                        f"(its bases: {[b.__name__ for b in obj.__mro__[1:]]})")
    controller = call_with_spec(obj, spec)
    if not isinstance(controller, LowLevelController):
        raise SpecError(f"controller spec {text!r}: {spec.target}(...) returned a {type(controller).__name__}, "
                        f"not a LowLevelController")
    return "problem", controller, spec


def build_dynamics(text: Optional[str], controller: Any) -> Tuple[Any, str]:
    """``(dynamics or None, match)`` for an InverseProblem (see the module docstring)."""
    import torch

    from ..lowlevel import Dynamics, LinearizedDynamics

    if text is None:
        ctx = controller.context(torch.zeros(1, controller.state_dim, dtype=torch.float64))
        text = "context" if {"A", "B"} <= set(ctx) else "actions"
    spec = parse_spec(text, "dynamics")
    if spec.name == "context":
        return LinearizedDynamics(), "next_state"
    if spec.name == "actions":
        return None, "actions"
    if spec.name is not None:
        raise SpecError(f"dynamics spec {text!r}: unknown built-in {spec.name!r}; use context, actions or package.module:ClassName")
    obj = call_with_spec(import_object(spec, "dynamics"), spec, "dynamics")
    if isinstance(obj, Dynamics):
        return obj, "next_state"
    if callable(obj):
        return LinearizedDynamics(obj), "next_state"
    raise SpecError(f"dynamics spec {text!r}: {spec.target}(...) gave a {type(obj).__name__}, neither a Dynamics nor a "
                    f"linearisation state -> (A, B)")


def build_solver(name: Optional[str], controller: Any) -> Tuple[Any, Any, str]:
    """``(solver, init, name)``; default ``analytic`` for affine controllers, else ``lm``."""
    from ..inverse import AdamSolver, AnalyticSolver, CEMSolver, LevenbergMarquardt

    name = name or ("analytic" if controller.is_affine else "lm")
    if name not in INVERSES:
        raise SpecError(f"--inverse {name!r}: expected one of {INVERSES}")
    if name == "amortized":
        if importlib.util.find_spec("ohio_layers.inverse.amortized") is None:
            raise SpecError("--inverse amortized: this ohio_layers has no amortized inverse (ohio_layers.inverse.amortized "
                            "is missing); use analytic, lm, adam or cem")
        mod = importlib.import_module("ohio_layers.inverse.amortized")
        if not hasattr(mod, "AmortizedSolver"):
            raise SpecError("--inverse amortized: ohio_layers.inverse.amortized has no AmortizedSolver")
        return mod.AmortizedSolver(), None, name
    if name == "analytic" and not controller.is_affine:
        raise SpecError(f"--inverse analytic needs a controller affine in z; {type(controller).__name__} has no affine(); "
                        f"use lm, adam or cem")
    init = AnalyticSolver() if controller.is_affine and name != "analytic" else None
    solver = {"analytic": AnalyticSolver, "lm": LevenbergMarquardt, "adam": AdamSolver, "cem": CEMSolver}[name]()
    return solver, init, name


# ------------------------------------------------------------------------------------------- report
def plot_residuals(residual: np.ndarray, tolerance: float, path: Path, title: str) -> bool:
    """Histogram of ``log10(residual)`` with the tolerance marked; ``False`` without matplotlib."""
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.hist(np.log10(np.maximum(residual, 1e-18)), bins=50, color="tab:blue")
    ax.axvline(np.log10(tolerance), color="tab:red", ls="--", label=f"tolerance {tolerance:g}")
    ax.set_xlabel("log10 residual")
    ax.set_ylabel("windows")
    ax.set_title(title, fontsize=9)
    ax.legend()
    save_figure(fig, path)
    return True


def _sanitize(dataset_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset_id)


# ------------------------------------------------------------------------------------------- --identify
def identify_unknowns(names_text: str, controller: Any) -> list:
    """``--identify a,b`` -> :class:`~ohio_layers.inverse.identify.Unknown` list for ``controller``
    (OSC: per axis group; a square matrix: its diagonal; else every entry free)."""
    from ..inverse.parametric import OSC_AXIS_GROUPS, Unknown, diagonal_unknown, find_parameters, get_tensor
    from ..lowlevel.osc import OperationalSpaceController

    names = [n.strip() for n in str(names_text).split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise SpecError(f"--identify {names_text!r}: expected distinct comma-separated parameter names, e.g. kp,damping_ratio")
    available = find_parameters(controller)
    unknowns = []
    for n in names:
        if n not in available:
            raise SpecError(f"--identify {names_text!r}: {n!r} is not a floating-point parameter or buffer of "
                            f"{type(controller).__name__}; it has {available}")
        t = get_tensor(controller, n)
        if isinstance(controller, OperationalSpaceController) and tuple(t.shape) == (6,):
            unknowns.append(Unknown(n, OSC_AXIS_GROUPS))
        elif t.dim() == 2 and t.shape[0] == t.shape[1]:
            unknowns.append(diagonal_unknown(n, int(t.shape[0])))
        else:
            unknowns.append(Unknown(n))
    return unknowns


def _osc_setting_of(controller: Any, output_max: Any) -> Any:
    """The :class:`~ohio_layers.envs.manipulation.ControllerSetting` of an (identified) OSC."""
    from ..envs.manipulation import ControllerSetting

    return ControllerSetting("identified", tuple(controller.kp.tolist()), tuple(controller.damping_ratio.tolist()), output_max)


def relabel_identified(args: argparse.Namespace, low: Dataset, kind: str, ctrl: Any, make_inverter: Any, k: int,
                       npz: Path, state_key: str, **relabel_kwargs: Any) -> Tuple[Dataset, Any, Dict[str, Any]]:
    """``--identify``: identify per episode, cluster, relabel each episode with its own controller.

    Returns ``(high, relabel report, identification report)``; the identified controller family is the
    spec's controller (problem kind) or its OSC (built-in ``osc``, identified on the recorded sub-step
    torques by teacher forcing, relabelled with :class:`~ohio_layers.inverse.osc_relabel.OSCRelabeler`).
    """
    import torch

    from ..inverse.mixed import identify_and_relabel
    from ..lowlevel import MemoizedLinearization

    if kind == "inverter":  # built-in osc: identify its OSC on the sub-step records
        if not hasattr(ctrl, "setting") or not hasattr(ctrl.setting, "make_controller"):
            raise SpecError(f"--identify: the built-in {type(ctrl).__name__} has no controller parameters to identify; "
                            f"use it with osc or a problem controller")
        family = ctrl.setting.make_controller(delta_limit=None)
        output_max = ctrl.setting.output_max
        identify_kwargs = {"states_key": "substep_states", "actions_key": "substep_torques"}
        from ..inverse.osc_relabel import OSCRelabeler

        def make(c: Any) -> Any:
            return OSCRelabeler(_osc_setting_of(c, output_max))
    else:
        family, make = ctrl, make_inverter
        identify_kwargs = {"k": k, "states_key": state_key, "actions_key": "actions"}
        lin = getattr(family, "linearization", None)
        if callable(lin) and not isinstance(lin, (torch.nn.Module, MemoizedLinearization)):
            # a simulator's linearisation (e.g. the built-in lqr's MuJoCo FD): once per batch of window starts,
            # so forward-mode AD reaches the parameters instead of central differences through the simulator
            family.linearization = MemoizedLinearization(lin)
    unknowns = identify_unknowns(args.identify, family)
    if kind == "inverter":  # the relabeller is rebuilt from a ControllerSetting: kp and damping ratio are all it carries
        dropped = [u.name for u in unknowns if u.name not in ("kp", "damping_ratio")]
        if dropped:
            raise SpecError(f"--identify {args.identify!r}: the built-in osc relabels with identified kp and damping_ratio "
                            f"only; {dropped} would be identified and then not used")
    low.require([identify_kwargs["states_key"], identify_kwargs["actions_key"], "episode_ids"])
    try:
        out = identify_and_relabel(low, family, unknowns, make, k, npz, strict=not args.allow_unidentified,
                                   identify_kwargs={**identify_kwargs, "progress": not args.quiet}, **relabel_kwargs)
    except ValueError as err:
        if "not identifiable" in str(err):
            raise ValueError(f"--identify {args.identify}: {err}") from None
        raise
    results, labels, clusters = out["identifications"], out["labels"], out["clusters"]
    ident = {"unknowns": [u.name for u in unknowns], "parameters": results[0].labels,
             "episodes": [r.summary() for r in results], "cluster_of_episode": labels.tolist(),
             "clusters": [{"members": [m.item() if isinstance(m, np.generic) else m for m in c.members],
                           "estimate": c.estimate, "spread": c.spread} for c in clusters]}
    return out["dataset"], out["report"], ident


def run_relabel(args: argparse.Namespace) -> Dict[str, Any]:
    """Relabel ``args.data`` and write the dataset, the report JSON and the histogram; returns the report."""
    from ..inverse import InverseProblem, ProblemInverter, relabel

    kind, ctrl, spec = build_controller(args.controller)  # spec errors first, before any data is read
    identify_names = getattr(args, "identify", None)
    low, _ = load_data(args.data, args.minari_root)
    meta: Dict[str, Any] = {"controller": spec.to_dict()}
    state_key, make_inverter = "states", None
    if kind == "problem":
        dynamics, match = build_dynamics(args.dynamics, ctrl)
        solver, init, inverse = build_solver(args.inverse, ctrl)
        k = args.k or ctrl.horizon
        state_key = "states" if "states" in low else "observations"
        inverter: Any = ProblemInverter(InverseProblem(ctrl, dynamics, match=match, steps=k), solver, init, state_key=state_key)

        def make_inverter(c: Any) -> Any:
            return ProblemInverter(InverseProblem(c, dynamics, match=match, steps=k), solver, init, state_key=state_key)
        meta.update(dynamics=args.dynamics or ("context" if match == "next_state" else "actions"), match=match, inverse=inverse)
    else:
        if args.dynamics is not None:
            raise SpecError(f"--dynamics: the built-in {spec.name} controller needs no dynamics model")
        if args.inverse not in (None, "analytic"):
            raise SpecError(f"--inverse {args.inverse!r}: the built-in {spec.name} controller has its own exact inverse; "
                            f"use analytic (the default)")
        if args.k not in (None, 1):
            raise SpecError(f"--k {args.k}: the built-in {spec.name} controller makes one decision per step (k = 1)")
        inverter, k, inverse = ctrl, 1, "analytic"
        meta.update(inverse=inverse)
    stride = args.stride or k
    out = str(args.out)
    to_minari = not out.endswith(".npz")
    if to_minari:
        work = Path(args.work or Path("runs") / "relabel" / _sanitize(out))
        npz, stem = work / "relabelled.npz", work / "relabelled"
    else:
        npz = Path(out)
        stem = npz.with_suffix("")
    extra = tuple(k_ for k_ in ("z_true",) if k_ in low)
    # the resume fingerprint must change with the controller's parameters, not only with the solver
    described = inverter.describe() if hasattr(inverter, "describe") else type(inverter).__name__
    description = f"{described}|{json.dumps(meta, sort_keys=True, default=str)}"
    relabel_kwargs = dict(chunk_size=args.chunk_size, stride=stride, tolerance=args.tolerance, extra_keys=extra,
                          progress=not args.quiet, description=description)
    identification = None
    if identify_names:
        meta["identify"] = identify_names
        relabel_kwargs["description"] = f"{description}|identify={identify_names}|strict={not args.allow_unidentified}"
        high, report, identification = relabel_identified(args, low, kind, ctrl, make_inverter, k, npz, state_key,
                                                          **relabel_kwargs)
    else:
        high, report = relabel(low, inverter, k, npz, **relabel_kwargs)
    high.metadata.update(meta)
    high.metadata["data"] = args.data
    high.save(npz)
    payload: Dict[str, Any] = {"data": args.data, "out": out, "k": k, "stride": stride, **meta,
                               "report": {**report.__dict__}, "summary": str(report)}
    if identification is not None:
        payload["identification"] = identification
    if "z_true" in high:
        err = np.abs(high["z"] - high["z_true"]).max(1)
        payload["z_error_vs_true"] = {"median": float(np.median(err)), "p90": float(np.quantile(err, 0.9)), "max": float(err.max())}
    if to_minari:
        from ..data.minari import export_minari

        folder = export_minari(high, out, root=args.minari_root, overwrite=args.overwrite)
        stem = folder / "relabelled"
    report_path, png = Path(f"{stem}.report.json"), Path(f"{stem}.residuals.png")
    payload["report_json"], payload["residual_png"] = str(report_path), str(png)
    write_json(report_path, payload)
    if not plot_residuals(high["residual"], args.tolerance, png, f"{spec.label} / {inverse}: {report.windows} windows"):
        payload["residual_png"] = None
    if not args.quiet:
        if identification is not None:
            print(identification_table(identification))
        print(f"relabelled {args.data} -> {out}: {report}")
        print(f"report: {report_path}" + (f", histogram: {png}" if payload["residual_png"] else ""))
    return payload


def identification_table(ident: Dict[str, Any]) -> str:
    """Clusters of identified episodes: members and pooled values (``nan``: not identified by the cluster)."""
    from .common import format_table

    rows = [[f"cluster {c}", str(len(cl["members"])), " ".join(map(str, cl["members"][:8])) + (" ..." if len(cl["members"]) > 8 else "")]
            + [f"{cl['estimate'][p]:.4g}" for p in ident["parameters"]] for c, cl in enumerate(ident["clusters"])]
    flagged = sum(not all(e["identifiable"].values()) for e in ident["episodes"])
    return (f"identified {ident['parameters']} on {len(ident['episodes'])} episodes ({flagged} with a flagged parameter)\n"
            + format_table(rows, ["cluster", "episodes", "members"] + ident["parameters"]))


def main(args: argparse.Namespace) -> None:
    """``ohio relabel`` (its arguments are declared in :func:`ohio_layers.cli.build_parser`): errors end
    the command with a message naming the bad spec, file or setting."""
    try:
        run_relabel(args)
    except (SpecError, FileNotFoundError, FileExistsError, KeyError, ValueError, RuntimeError) as err:
        raise SystemExit(f"ohio relabel: {err}") from None
