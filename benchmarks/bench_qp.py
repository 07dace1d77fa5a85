"""Benchmark: the native QP layer against PIQP, ProxQP (loop, solve_in_parallel, QPFunction) and OSQP.

Run:  python benchmarks/bench_qp.py [--batches 1 64 1024] [--shapes osc ineq20] [--stat median|min]
                                   [--order fixed|shuffled] [--repeat K]   (one thread)

Ours runs its compiled (numba) CPU path when numba is installed (extra ``fastqp``); the header
says which. Shapes (float64): ``osc`` = the OSC box QP (n = 7, 14 bounds, as in bench_qp_osc.py);
``ineq20`` = n = 20 with 20 random inequalities plus bounds |x| <= 2 (about a third active).
Every solver gets eps 1e-9 (absolute and relative where it has both). "fwd" = forward only,
"fwd+bwd" = forward + backward of sum(x) w.r.t. Q and p. Methods are timed round-robin in one
process (one call of each per round), so machine load hits all of them alike (``--order shuffled``
draws a new order every round, so a slow drift of the load does not favour the methods timed
first); times are medians,
in microseconds per problem; "/ ours fwd" and "/ ours f+b" divide each time by our forward and
by our forward + backward time of the same run. "worst KKT" is the largest relative KKT residual
(:func:`ohio_layers.lowlevel.qp.certify.kkt_residual`) over the batch at each solver's returned
primal and dual variables. Loops re-create each solver per problem (``setup``/``init`` + ``solve``),
as a batch of different problems needs. A missing anchor (extra ``qpbench``) is skipped with a note.

"torch autograd floor" is what any torch layer pays before it does any work: a
``torch.autograd.Function`` whose forward returns a preallocated ``(B, n)`` array as a tensor and whose
backward returns preallocated zeros, called as ours is (fresh leaves ``Q``, ``p`` that require
grad, ``x.sum().backward()``), through the same cheapest apply as ours and, like ours, given only
the inputs that require grad: a lower bound on any torch layer's fwd+bwd. The closing lines divide ours and this floor by PIQP's forward: where the floor alone
is above a target ratio, no torch-autograd layer can meet it.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ohio_layers.lowlevel.qp import QPProblem, solve_qp
from ohio_layers.lowlevel.qp.certify import kkt_residual

from bench_qp_osc import osc_qp  # run as a script: this file's folder is on sys.path

F64 = torch.float64
EPS = 1e-9
ROUNDS = {1: 200, 64: 30, 1024: 5}
Problem = Dict[str, torch.Tensor]
Result = Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray, np.ndarray]]  # x (B, n); (lower, upper, ineq) duals


# ------------------------------------------------------------------ problems
def osc_problem(B: int, seed: int = 0) -> Problem:
    """The OSC-shaped problems of ``bench_qp_osc.py`` (one generator for both benchmarks), bounds per member."""
    n = 7
    Q, p, lo, hi = osc_qp(B, n, seed)
    lim = hi.expand(B, n).clone()
    return {"Q": Q, "p": p, "lower": -lim, "upper": lim, "G": torch.zeros(B, 0, n, dtype=F64), "h": torch.zeros(B, 0, dtype=F64)}


def ineq20_problem(B: int, seed: int = 0) -> Problem:
    n = m = 20
    g = torch.Generator().manual_seed(seed)
    L = torch.randn(B, n, n, generator=g, dtype=F64)
    Q = L @ L.transpose(1, 2) / n + 0.1 * torch.eye(n, dtype=F64)
    p = 3.0 * torch.randn(B, n, generator=g, dtype=F64)
    G = torch.randn(B, m, n, generator=g, dtype=F64)
    h = 1.0 + torch.rand(B, m, generator=g, dtype=F64)
    lim = torch.full((B, n), 2.0, dtype=F64)
    return {"Q": Q, "p": p, "lower": -lim, "upper": lim, "G": G, "h": h}


SHAPES = {"osc": ("OSC shape, n=7, 14 bounds", osc_problem), "ineq20": ("n=20, 20 inequalities + bounds", ineq20_problem)}


def worst_kkt(P: Problem, res: Result) -> float:
    x, zl, zu, mu = (torch.as_tensor(np.asarray(a), dtype=F64) for a in (res[0], *res[1]))
    B, n = x.shape
    empty = torch.zeros(B, 0, dtype=F64)
    prob = QPProblem(0.5 * (P["Q"] + P["Q"].transpose(1, 2)), P["p"], P["lower"], P["upper"], P["G"], P["h"],
                     torch.zeros(B, 0, n, dtype=F64), empty)
    return float(kkt_residual(prob, x, (zl, zu, mu, empty)).max())


# ------------------------------------------------------------------ methods: each returns run() -> Result
def ours(P: Problem, backward: bool) -> Callable[[], Result]:
    box = P["G"].shape[1] == 0
    args = (P["Q"], P["p"], P["lower"], P["upper"]) + (() if box else (P["G"], P["h"]))

    def run() -> Result:
        if backward:
            Q, p = args[0].clone().requires_grad_(True), args[1].clone().requires_grad_(True)
            sol = solve_qp(Q, p, *args[2:])
            sol.x.sum().backward()
        else:
            with torch.no_grad():
                sol = solve_qp(*args)
        mu = sol.ineq_dual if sol.ineq_dual is not None else torch.zeros(sol.x.shape[0], 0, dtype=F64)
        return sol.x.detach().numpy(), (sol.lower_dual.numpy(), sol.upper_dual.numpy(), mu.numpy())
    return run


def _numpy(P: Problem) -> List[np.ndarray]:
    return [P[k].numpy() for k in ("Q", "p", "lower", "upper", "G", "h")]


def piqp_loop(P: Problem) -> Callable[[], Result]:
    import piqp

    Q, p, lo, hi, G, h = _numpy(P)
    Qf = [np.asfortranarray(q) for q in Q]
    Gf = [np.asfortranarray(g) if g.shape[0] else None for g in G]

    def run() -> Result:
        B, n = p.shape
        x, zl, zu, mu = np.empty((B, n)), np.empty((B, n)), np.empty((B, n)), np.empty((B, G.shape[1]))
        for i in range(B):
            s = piqp.DenseSolver()
            s.settings.eps_abs = s.settings.eps_rel = EPS
            s.setup(Qf[i], p[i], None, None, Gf[i], None, h[i] if G.shape[1] else None, lo[i], hi[i])
            s.solve()
            r = s.result
            x[i], zl[i], zu[i] = r.x, r.z_bl, r.z_bu
            if G.shape[1]:
                mu[i] = r.z_u
        return x, (zl, zu, mu)
    return run


def _proxqp_init(qp, Q: np.ndarray, p: np.ndarray, lo: np.ndarray, hi: np.ndarray, G: np.ndarray, h: np.ndarray) -> None:
    qp.settings.eps_abs, qp.settings.eps_rel, qp.settings.verbose = EPS, 0.0, False
    m = G.shape[0]
    qp.init(Q, p, None, None, G if m else None, np.full(m, -1e20) if m else None, h if m else None, lo, hi)


def _proxqp_result(r, m: int, n: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    z = np.asarray(r.z)
    box = z[m:m + n]
    return np.asarray(r.x), np.maximum(-box, 0.0), np.maximum(box, 0.0), z[:m]


def proxqp_loop(P: Problem) -> Callable[[], Result]:
    import proxsuite

    dense = proxsuite.proxqp.dense

    Q, p, lo, hi, G, h = _numpy(P)

    def run() -> Result:
        B, n = p.shape
        m = G.shape[1]
        out = []
        for i in range(B):
            qp = dense.QP(n, 0, m, True)
            _proxqp_init(qp, Q[i], p[i], lo[i], hi[i], G[i], h[i])
            qp.solve()
            out.append(_proxqp_result(qp.results, m, n))
        x, zl, zu, mu = (np.stack(a) for a in zip(*out))
        return x, (zl, zu, mu)
    return run


def proxqp_parallel(P: Problem) -> Callable[[], Result]:
    import proxsuite

    dense = proxsuite.proxqp.dense

    Q, p, lo, hi, G, h = _numpy(P)

    def run() -> Result:
        B, n = p.shape
        m = G.shape[1]
        batch = dense.BatchQP()
        for i in range(B):
            qp = batch.init_qp_in_place(n, 0, m + n)
            # init_qp_in_place has no box_constraints flag: the bounds become rows of C
            C = np.vstack([G[i], np.eye(n)])
            qp.settings.eps_abs, qp.settings.eps_rel, qp.settings.verbose = EPS, 0.0, False
            qp.init(Q[i], p[i], None, None, C, np.concatenate([np.full(m, -1e20), lo[i]]), np.concatenate([h[i], hi[i]]))
        dense.solve_in_parallel(batch, num_threads=1)
        out = []
        for i in range(B):
            z = np.asarray(batch.get(i).results.z)
            out.append((np.asarray(batch.get(i).results.x), np.maximum(-z[m:], 0.0), np.maximum(z[m:], 0.0), z[:m]))
        x, zl, zu, mu = (np.stack(a) for a in zip(*out))
        return x, (zl, zu, mu)
    return run


def proxqp_qpfunction(P: Problem) -> Callable[[], Result]:
    from proxsuite.torch.qplayer import QPFunction

    B, n = P["p"].shape
    m = P["G"].shape[1]
    eye = torch.eye(n, dtype=F64).expand(B, n, n)
    C = torch.cat([P["G"], eye], 1)
    lo = torch.cat([torch.full((B, m), -1e20, dtype=F64), P["lower"]], 1)
    hi = torch.cat([P["h"], P["upper"]], 1)
    A, b = torch.empty(0, dtype=F64), torch.empty(0, dtype=F64)

    def run() -> Result:
        Q, p = P["Q"].clone().requires_grad_(True), P["p"].clone().requires_grad_(True)
        x, _, z = QPFunction(eps=EPS, omp_parallel=False)(Q, p, A, b, C, lo, hi)
        x.sum().backward()
        z = z.detach().numpy()
        return x.detach().numpy(), (np.maximum(-z[:, m:], 0.0), np.maximum(z[:, m:], 0.0), z[:, :m])
    return run


@contextlib.contextmanager
def _silent_stdout() -> Iterator[None]:
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def osqp_loop(P: Problem) -> Callable[[], Result]:
    import osqp
    from scipy import sparse

    Q, p, lo, hi, G, h = _numpy(P)
    B, n = p.shape
    m = G.shape[1]
    Ps = [sparse.csc_matrix(np.triu(q)) for q in Q]
    As = [sparse.csc_matrix(np.vstack([g, np.eye(n)])) for g in G]
    ls = np.concatenate([np.full((B, m), -np.inf), lo], 1)
    us = np.concatenate([h, hi], 1)

    def run() -> Result:
        with _silent_stdout():  # OSQP's C code prints "Polishing not needed" even with verbose=False
            return solve_all()

    def solve_all() -> Result:
        x, zl, zu, mu = np.empty((B, n)), np.empty((B, n)), np.empty((B, n)), np.empty((B, m))
        for i in range(B):
            s = osqp.OSQP()
            s.setup(Ps[i], p[i], As[i], ls[i], us[i], eps_abs=EPS, eps_rel=EPS, polishing=True, verbose=False, max_iter=20000)
            r = s.solve()
            x[i], y = r.x, r.y
            zl[i], zu[i], mu[i] = np.maximum(-y[m:], 0.0), np.maximum(y[m:], 0.0), y[:m]
        return x, (zl, zu, mu)
    return run


def autograd_floor(P: Problem) -> Callable[[], Result]:
    """A no-op ``torch.autograd.Function`` called as :func:`ours` with ``backward=True`` (module docstring)."""
    from ohio_layers.lowlevel.qp.dual_active_set import function_apply

    B, n = P["p"].shape
    out = np.zeros((B, n))  # a new tensor on the same memory each call (as ours: torch.from_numpy of the kernel's output)
    zeros = (torch.zeros_like(P["Q"]), torch.zeros_like(P["p"]))
    empty = np.zeros((B, 0))

    class NoOp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return torch.from_numpy(out)

        @staticmethod
        def backward(ctx, g: torch.Tensor) -> tuple:  # type: ignore[override]
            return zeros

    apply = function_apply(NoOp)

    def run() -> Result:
        Q, p = P["Q"].clone().requires_grad_(True), P["p"].clone().requires_grad_(True)
        apply(Q, p).sum().backward()  # only the inputs that require grad (as ours): each input costs autograd time
        return out, (empty, empty, empty)
    return run


METHODS: Dict[str, Tuple[str, Callable[[Problem], Callable[[], Result]]]] = {
    "ohio solve_qp": ("fwd", lambda P: ours(P, False)),
    "ohio solve_qp ": ("fwd+bwd", lambda P: ours(P, True)),
    "PIQP dense loop": ("fwd", piqp_loop),
    "ProxQP dense loop": ("fwd", proxqp_loop),
    "ProxQP solve_in_parallel": ("fwd", proxqp_parallel),
    "ProxQP QPFunction": ("fwd+bwd", proxqp_qpfunction),
    "OSQP loop": ("fwd", osqp_loop),
    "torch autograd floor": ("fwd+bwd", autograd_floor),
}
NO_KKT = ("torch autograd floor",)  # does no work: no residual to report


# ------------------------------------------------------------------ timing
def bench(shape: str, B: int, stat: Callable[[List[float]], float] = statistics.median,
          order: str = "fixed", repeat: int = 1) -> List[Tuple[str, str, Optional[float], Optional[float], str]]:
    P = SHAPES[shape][1](B)
    runs: Dict[str, Callable[[], Result]] = {}
    notes: Dict[str, str] = {}
    for name, (_, make) in METHODS.items():
        try:
            runs[name] = make(P)
        except ImportError as e:
            notes[name] = f"skipped: {e.name} not installed (pip install 'ohio_layers[qpbench]')"
    kkt = {name: (float("nan") if name in NO_KKT else worst_kkt(P, run())) for name, run in runs.items()}
    for name in NO_KKT:  # the others were warmed up by the KKT pass
        if name in runs:
            runs[name]()
    times: Dict[str, List[float]] = {name: [] for name in runs}
    names = list(runs)
    shuffle = random.Random(B).shuffle
    for _ in range(repeat * ROUNDS.get(B, 5)):
        if order == "shuffled":
            shuffle(names)
        for name in names:
            run = runs[name]
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return [(name.strip(), mode, stat(times[name]) / B if name in runs else None, kkt.get(name), notes.get(name, ""))
            for name, (mode, _) in METHODS.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--stat", default="median", choices=["median", "min"],
                        help="per-method statistic over the rounds (min is steadier on a loaded machine)")
    parser.add_argument("--order", default="fixed", choices=["fixed", "shuffled"],
                        help="order of the methods within a round: as listed, or a new random order every round")
    parser.add_argument("--repeat", type=int, default=1,
                        help=f"multiply the rounds per batch size ({ROUNDS}) by this (steadier statistics under load)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from ohio_layers.lowlevel.qp.dual_active_set import available

    print(f"torch {torch.__version__}, 1 thread, float64, eps {EPS:g}; us/problem ({args.stat} of {args.repeat}x rounds, {args.order} order); "
          f"ratios = time / ours in this run; compiled (numba) path {'on' if available() else 'OFF (pip install numba)'}")
    closing: List[str] = []
    for shape in args.shapes:
        print(f"\n== {SHAPES[shape][0]} ==")
        print(f"| {'method':26s} | {'mode':7s} | {'B':>5s} | {'us/problem':>10s} | {'/ ours fwd':>10s} | {'/ ours f+b':>10s} | {'worst KKT':>9s} |")
        print(f"|{'-' * 28}|{'-' * 9}|{'-' * 7}|{'-' * 12}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
        for B in args.batches:
            rows = bench(shape, B, min if args.stat == "min" else statistics.median, args.order, args.repeat)
            ref = {mode: t for name, mode, t, _, _ in rows if name == "ohio solve_qp"}
            for name, mode, t, kkt, note in rows:
                if t is None:
                    print(f"| {name:26s} | {mode:7s} | {B:5d} | {note} |")
                    continue
                kkt_text = "-" if kkt != kkt else f"{kkt:9.1e}"
                print(f"| {name:26s} | {mode:7s} | {B:5d} | {1e6 * t:10.1f} | {t / ref['fwd']:9.2f}x | {t / ref['fwd+bwd']:9.2f}x | {kkt_text:>9s} |")
            closing.append(_closing(shape, B, rows))
    print()
    print("\n".join(line for line in closing if line))


def _closing(shape: str, B: int, rows: List[Tuple[str, str, Optional[float], Optional[float], str]]) -> str:
    """One line per (shape, B): ours fwd+bwd and the autograd floor as multiples of PIQP's forward."""
    t = {(name, mode): secs for name, mode, secs, _, _ in rows}
    piqp, floor = t.get(("PIQP dense loop", "fwd")), t.get(("torch autograd floor", "fwd+bwd"))
    ours_fb = t[("ohio solve_qp", "fwd+bwd")]
    if piqp is None or floor is None:
        return ""
    verdict = (f"a 2x target is out of reach of any torch-autograd layer here (the floor alone is {floor / piqp:.2f}x)"
               if floor >= 2 * piqp else f"the floor leaves {1e6 * (2 * piqp - floor):.1f} us of a 2x budget for the work")
    return (f"{shape} B={B}: ours fwd+bwd = {ours_fb / piqp:.2f}x PIQP fwd ({1e6 * ours_fb:.1f} vs {1e6 * piqp:.1f} us); "
            f"torch autograd floor = {1e6 * floor:.1f} us = {floor / piqp:.2f}x PIQP fwd; {verdict}")


if __name__ == "__main__":
    main()
