"""The ``ohio`` command: one sub-command per experiment.

    ohio reacher                      # defaults: about 15 min on 2 cores
    ohio reacher --quick              # a 2-minute smoke run
    ohio reacher --set train_steps=30000 --set seeds=[0,1,2]
    ohio manipulation --task door     # robosuite Lift/Door under original and changed OSC gains
    ohio amod                         # vehicle rebalancing with a min-cost-flow low level
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


def _reacher(args: argparse.Namespace) -> None:
    from .experiments.reacher import ReacherExperimentConfig, run

    values: Dict[str, Any] = dict(REACHER_QUICK) if args.quick else {}
    values["out_dir"] = args.out or ("runs/reacher-quick" if args.quick else "runs/reacher")
    values.update(_parse_sets(args.set))
    try:
        cfg = ReacherExperimentConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"ohio reacher: {err}") from None
    run(cfg)


def _manipulation(args: argparse.Namespace) -> None:
    from .experiments.manipulation import FULL, QUICK, ManipulationExperimentConfig, run

    values: Dict[str, Any] = dict(QUICK if args.quick else FULL if args.full else {})
    values["task"] = args.task
    values["out_dir"] = args.out or f"runs/manipulation-{args.task}" + ("-quick" if args.quick else "-full" if args.full else "")
    values.update(_parse_sets(args.set))
    try:
        cfg = ManipulationExperimentConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"ohio manipulation: {err}") from None
    run(cfg)


def _amod(args: argparse.Namespace) -> None:
    from .experiments.amod import QUICK, AMoDExperimentConfig, run

    values: Dict[str, Any] = dict(QUICK) if args.quick else {}
    values["out_dir"] = args.out or ("runs/amod-quick" if args.quick else "runs/amod")
    values.update(_parse_sets(args.set))
    try:
        cfg = AMoDExperimentConfig.from_dict(values)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"ohio amod: {err}") from None
    run(cfg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ohio", description="Offline hierarchical RL by inverse optimisation: experiments.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("reacher", help="goal-reaching reacher with an LQR low level (collect, relabel, train, evaluate)")
    p.add_argument("--out", help="output directory (default runs/reacher)")
    p.add_argument("--quick", action="store_true", help="a small smoke run (about 2 minutes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ReacherExperimentConfig field (JSON value), repeatable")
    p.set_defaults(func=_reacher)

    p = sub.add_parser("manipulation", help="robosuite Lift/Door: offline RL that survives a changed OSC controller")
    p.add_argument("--task", choices=("lift", "door"), default="lift")
    p.add_argument("--out", help="output directory (default runs/manipulation-<task>)")
    profile = p.add_mutually_exclusive_group()
    profile.add_argument("--quick", action="store_true", help="a small smoke run (a few minutes)")
    profile.add_argument("--full", action="store_true", help="the large profile, for a bigger machine (hours)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a ManipulationExperimentConfig field (JSON value), repeatable")
    p.set_defaults(func=_manipulation)

    p = sub.add_parser("amod", help="vehicle rebalancing: OHIO vs end-to-end agents from heuristic data, online fine-tuning")
    p.add_argument("--out", help="output directory (default runs/amod)")
    p.add_argument("--quick", action="store_true", help="a small smoke run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an AMoDExperimentConfig field (JSON value), repeatable")
    p.set_defaults(func=_amod)
    return parser


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
