"""The ``ohio`` command: one sub-command per experiment.

    ohio reacher                      # defaults: about 9 min on 2 idle cores
    ohio reacher --quick              # a 2-minute smoke run
    ohio reacher --full               # the paper's sizes (every command but identify-*; prints an estimate)
    ohio reacher --set train_steps=30000 --set seeds=[0,1,2]
    ohio manipulation --task door     # robosuite Lift/Door under original and changed OSC gains
    ohio amod                         # vehicle rebalancing with a min-cost-flow low level
    ohio amod --device cuda           # agents trained on the GPU (every experiment command)
    ohio supply-chain --scenario 1w10s  # inventory network with a lexicographic-LP low level
    ohio relabel data.npz --controller mypkg.ctrl:MyController --out high.npz
    ohio identify-manipulation        # identify the OSC gains of a log mixing controller settings
    ohio identify-reacher             # the same for LQR cost weights on the reacher
    ohio study model-error            # reacher inverses under a wrong dynamics model (B, A, learned)
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional, Sequence


def _parse_sets(pairs: Sequence[str]) -> Dict[str, Any]:
    """``key=value`` pairs; values are JSON (``3``, ``[0,1]``, ``"x"``) or plain strings."""
    out: Dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


REACHER_QUICK = {"episodes": 20, "train_steps": 1500, "seeds": [0], "eval_episodes": 5, "hidden": [128, 128]}


def _run(name: str, config_cls: Any, run: Any, args: argparse.Namespace, profile: Dict[str, Any],
         out_dir: str, fixed: Optional[Dict[str, Any]] = None) -> None:
    """Build the config from ``profile`` + fixed values + ``--out`` + ``--set`` and run it; bad keys or
    values end the command with a message naming them."""
    values: Dict[str, Any] = {**profile, **(fixed or {}), "out_dir": args.out or out_dir}
    if getattr(args, "device", None) is not None:
        values["device"] = args.device
    values.update(_parse_sets(args.set))
    try:
        cfg = config_cls.from_dict(values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"ohio {name}: {err}") from None
    run(cfg)


def _profile(args: argparse.Namespace, quick: Dict[str, Any], full: Dict[str, Any]) -> "tuple[Dict[str, Any], str]":
    """The ``--quick`` / ``--full`` overrides (or none) and the matching output-folder suffix."""
    return (quick, "-quick") if args.quick else (full, "-full") if args.full else ({}, "")


def _reacher(args: argparse.Namespace) -> None:
    from .experiments.reacher import FULL, ReacherExperimentConfig, run

    profile, suffix = _profile(args, REACHER_QUICK, FULL)
    _run("reacher", ReacherExperimentConfig, run, args, profile, f"runs/reacher{suffix}")


def _manipulation(args: argparse.Namespace) -> None:
    from .experiments.manipulation import FULL, QUICK, ManipulationExperimentConfig, run

    profile, suffix = _profile(args, QUICK, FULL)
    _run("manipulation", ManipulationExperimentConfig, run, args, profile, f"runs/manipulation-{args.task}{suffix}",
         {"task": args.task})


def _identify_manipulation(args: argparse.Namespace) -> None:
    from .experiments.manipulation_identify import FULL, QUICK, ManipulationIdentifyConfig, run

    profile, suffix = _profile(args, QUICK, FULL)
    _run("identify-manipulation", ManipulationIdentifyConfig, run, args, profile, f"runs/identify-{args.task}{suffix}",
         {"task": args.task})


def _identify_reacher(args: argparse.Namespace) -> None:
    from .experiments.reacher_identify import FULL, QUICK, ReacherIdentifyConfig, run

    profile, suffix = _profile(args, QUICK, FULL)
    _run("identify-reacher", ReacherIdentifyConfig, run, args, profile, f"runs/identify-reacher{suffix}")


def _amod(args: argparse.Namespace) -> None:
    from .experiments.amod import FULL, QUICK, AMoDExperimentConfig, run

    fixed = {k: v for k, v in (("scenario", args.scenario), ("preset", args.preset)) if v is not None}
    if args.full and args.scenario is None:
        print("note: the paper's AMoD cities have 14-17 regions (NYC Brooklyn, Shenzhen): pass --scenario PATH.json "
              "--preset ...; without it --full trains at the paper's sizes on the synthetic 3x3 city")
    profile, suffix = _profile(args, QUICK, FULL)
    _run("amod", AMoDExperimentConfig, run, args, profile, f"runs/amod{suffix}", fixed)


def _supply_chain(args: argparse.Namespace) -> None:
    from .experiments.supply_chain import FULL, QUICK, SupplyChainExperimentConfig, run

    profile, suffix = _profile(args, QUICK, FULL)
    _run("supply-chain", SupplyChainExperimentConfig, run, args, profile, f"runs/supply-chain-{args.scenario}{suffix}",
         {"scenario": args.scenario})


def _study_model_error(args: argparse.Namespace) -> None:
    from .experiments.model_error import QUICK, ModelErrorConfig, run

    suffix = "-quick" if args.quick else ""
    _run("study model-error", ModelErrorConfig, run, args, QUICK if args.quick else {}, f"runs/model-error{suffix}")


def _relabel(args: argparse.Namespace) -> None:
    from .experiments.relabel_command import main as relabel_main

    relabel_main(args)


def _add_profiles(p: argparse.ArgumentParser, quick: str, full: str) -> None:
    """``--quick`` and ``--full``, mutually exclusive; a run prints its estimated wall time before it starts."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help=f"a small smoke run ({quick})")
    group.add_argument("--full", action="store_true", help=f"the paper's sizes ({full}; the estimated wall time on "
                       "--set workers=N is printed before it starts; --set engine=ray for more than one machine)")


def _add_identify_profiles(p: argparse.ArgumentParser, full: str) -> None:
    """``--quick`` and ``--full`` of the identification experiments (no wall-time estimate is printed)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="a small smoke run")
    group.add_argument("--full", action="store_true", help=f"the downstream comparison at a size that resolves it ({full})")


def _add_common(p: argparse.ArgumentParser, config_name: str, default_out: str) -> None:
    p.add_argument("--out", help=f"output directory (default {default_out})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a {config_name} field (JSON value), repeatable")
    p.add_argument("--device", help="torch device of the trained agents: cpu (default), cuda or cuda:N "
                   "(refused when this machine has no such GPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ohio", description="Offline hierarchical RL by inverse optimisation: experiments.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("reacher", help="goal-reaching reacher with an LQR low level (collect, relabel, train, evaluate)")
    _add_common(p, "ReacherExperimentConfig", "runs/reacher")
    _add_profiles(p, "about 2 minutes", "10^6 BC steps, 3 seeds: about 20 h on 2 cores")
    p.set_defaults(func=_reacher)

    p = sub.add_parser("manipulation", help="robosuite Lift/Door: offline RL that survives a changed OSC controller")
    p.add_argument("--task", choices=("lift", "door"), default="lift")
    _add_common(p, "ManipulationExperimentConfig", "runs/manipulation-<task>")
    _add_profiles(p, "a few minutes", "300 episodes, 100k IQL steps, 3 seeds: about 3 h on 2 cores")
    p.set_defaults(func=_manipulation)

    p = sub.add_parser("identify-manipulation", help="robosuite Lift/Door: identify the OSC gains of every episode of a "
                       "log mixing controller settings (withheld), cluster, relabel")
    p.add_argument("--task", choices=("lift", "door"), default="lift")
    _add_common(p, "ManipulationIdentifyConfig", "runs/identify-<task>")
    _add_identify_profiles(p, "identification and IQL on identified / true labels, 30 paired seeds: about 75 min on 2 "
                           "cores (Door)")
    p.set_defaults(func=_identify_manipulation)

    p = sub.add_parser("identify-reacher", help="reacher: identify the LQR cost weights of every episode of a log mixing "
                       "them (withheld), cluster, relabel, train; deployed under every setting")
    _add_common(p, "ReacherIdentifyConfig", "runs/identify-reacher")
    _add_identify_profiles(p, "60 episodes, 20k BC steps, 10 paired seeds, 30 evaluation episodes")
    p.set_defaults(func=_identify_reacher)

    p = sub.add_parser("amod", help="vehicle rebalancing: OHIO vs end-to-end agents from heuristic data, online fine-tuning")
    _add_common(p, "AMoDExperimentConfig", "runs/amod")
    _add_profiles(p, "about 2 minutes", "200k steps per agent, with --scenario for a 14-17-region city: hours to days")
    p.add_argument("--scenario", metavar="PATH.json", help="a city in the reference JSON schema (default: synthetic 3x3 city)")
    p.add_argument("--preset", choices=("nyc-brooklyn", "shenzhen-downtown-west"),
                   help="the paper's per-city step minutes, demand scale and start hour (needs --scenario)")
    p.set_defaults(func=_amod)

    p = sub.add_parser("supply-chain", help="inventory network: OHIO vs end-to-end from MPC / S-type data, transfer, fine-tuning")
    p.add_argument("--scenario", choices=("1w3s", "1w10s"), default="1w3s")
    _add_common(p, "SupplyChainExperimentConfig", "runs/supply-chain-<scenario>")
    _add_profiles(p, "a few minutes", "500k updates per agent, 150k online steps: days on 2 cores")
    p.set_defaults(func=_supply_chain)

    p = sub.add_parser("study", help="studies of the method itself")
    studies = p.add_subparsers(dest="study", required=True)
    q = studies.add_parser("model-error", help="reacher: relabel error, replay error and downstream score of the "
                           "analytic, LM and amortised inverses through degraded dynamics models")
    _add_common(q, "ModelErrorConfig", "runs/model-error")
    q.add_argument("--quick", action="store_true", help="a small smoke run (under a minute)")
    q.set_defaults(func=_study_model_error)

    p = sub.add_parser("relabel", help="relabel a dataset (npz or Minari) with your low-level controller: z* per k-step window")
    p.add_argument("data", help="an ohio .npz, or a local Minari dataset id or folder (never downloaded)")
    p.add_argument("--controller", required=True, metavar="SPEC",
                   help="lqr:horizon=5 | osc:kp=150,damping_ratio=1 | min_cost_flow:graph=city.json | package.module:ClassName[:k=v,...]")
    p.add_argument("--out", required=True, help="output .npz, or a Minari dataset id (ns/name-v0)")
    p.add_argument("--dynamics", metavar="SPEC", help="context | actions | package.module:ClassName[:k=v,...]")
    p.add_argument("--inverse", choices=("analytic", "lm", "adam", "cem", "amortized"),
                   help="inverse solver (default analytic for affine controllers, else lm)")
    p.add_argument("--k", type=int, help="low-level steps per decision (default: the controller's horizon)")
    p.add_argument("--stride", type=int, help="rows between window starts (default k)")
    p.add_argument("--tolerance", type=float, default=1e-6, help="residual counted as reproduced in the report")
    p.add_argument("--chunk-size", type=int, default=4096, help="windows per resumable chunk")
    p.add_argument("--minari-root", help="Minari datasets root (default $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    p.add_argument("--work", help="work folder of a Minari output (default runs/relabel/<id>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing Minari dataset OUT")
    p.add_argument("--identify", metavar="NAMES",
                   help="identify these controller parameters per episode (e.g. kp,damping_ratio or Q), cluster, "
                        "relabel every episode with its own identified controller")
    p.add_argument("--allow-unidentified", action="store_true",
                   help="with --identify: use estimates the data cannot pin down instead of refusing")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_relabel)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
