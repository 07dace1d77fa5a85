"""Goal-reaching reacher domain: env, FD linearisation, behaviour policies, data collection."""
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from ohio_layers.data.dataset import LOW_LEVEL_KEYS, Dataset, window_starts
from ohio_layers.envs.reacher import (
    ENV_ID, SINGLE_GOAL_ENV_ID, GoalReacherConfig, GoalReacherEnv, fingertip_position, register_reacher_envs,
)
from ohio_layers.envs.reacher.data import collect, evaluate, evaluate_stats, make_env
from ohio_layers.envs.reacher.linearization import ReacherFDLinearization
from ohio_layers.envs.reacher.policies import (
    ExpertPolicy, LeadOracle, LQRHierarchicalPolicy, RandomPolicy, heuristic_hierarchical_policy, inverse_kinematics,
    make_reacher_lqr,
)

SHORT = dict(episode_steps=40, goal_period=20)


@pytest.fixture(scope="module")
def lin() -> ReacherFDLinearization:
    return ReacherFDLinearization()


# ---------------------------------------------------------------------------- env
def test_registered_env_passes_check_env():
    register_reacher_envs()
    register_reacher_envs()  # idempotent
    env = gym.make(ENV_ID)
    assert env.unwrapped.config == GoalReacherConfig()
    check_env(env.unwrapped, skip_render_check=True)
    env.close()
    single = gym.make(SINGLE_GOAL_ENV_ID)
    assert single.unwrapped.config.episode_steps == 1000 and single.unwrapped.config.goal_period is None
    single.close()


def test_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="goal_period"):
        GoalReacherEnv(goal_period=12)  # not a multiple of k = 5
    with pytest.raises(ValueError, match="radius"):
        GoalReacherConfig(radius=0.0)
    with pytest.raises(ValueError, match="action"):
        env = make_env(SHORT)
        env.reset(seed=0)
        env.step(np.zeros(3))


def _run(env: GoalReacherEnv, seed: int, actions: np.ndarray):
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, info["state"], info["target"])]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out.append((obs, r, info["state"], info["target"]))
    return out, trunc


def test_seeded_reset_and_step_are_deterministic_and_goals_switch():
    actions = np.random.default_rng(0).uniform(-1, 1, (40, 2))
    a, trunc = _run(make_env(SHORT), 7, actions)
    b, _ = _run(make_env(SHORT), 7, actions)
    c, _ = _run(make_env(SHORT), 8, actions)
    assert trunc  # T = 40 steps
    for (o1, r1, s1, g1), (o2, r2, s2, g2) in zip(a, b):
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(g1, g2)
        assert r1 == r2
    assert not np.array_equal(a[0][3], c[0][3])  # other seed, other target
    targets = np.array([t for *_, t in a])
    # Target fixed within a goal period, switched right after step 20 (visible in that step's obs).
    assert np.all(targets[1:20] == targets[0]) and not np.array_equal(targets[20], targets[19])
    assert np.all(targets[20:] == targets[20])
    np.testing.assert_array_equal(a[20][0][4:6], targets[20])
    assert np.all(np.linalg.norm(targets, axis=1) < 0.2)


def test_reward_is_sparse_success_at_radius():
    env = make_env(SHORT)
    env.reset(seed=3)
    g = env.target
    q = inverse_kinematics(g, env.controller_state()[:2])
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    qpos[:2], qvel[:2] = q, 0.0
    env.set_state(qpos, qvel)
    _, r, _, _, info = env.step(np.zeros(2))
    assert r == 1.0 and info["is_success"] and info["distance"] < 1e-4
    np.testing.assert_allclose(env.fingertip(), fingertip_position(env.controller_state()[:2]), atol=1e-12)
    qpos[:2] = q + np.array([0.0, 0.5])
    env.set_state(qpos, qvel)
    _, r, _, _, info = env.step(np.zeros(2))
    assert r == 0.0 and info["distance"] > 0.015


def test_unwrapped_q1_is_continuous_across_full_rotations():
    env = make_env(dict(episode_steps=200, goal_period=None))
    obs, info = env.reset(seed=0)
    q1 = [info["state"][0]]
    cos_sin = [obs[[0, 2]]]
    for _ in range(150):
        obs, _, _, _, info = env.step(np.array([0.1, 0.0]))  # q1dot -> 200 * 0.1 = 20 rad/s
        q1.append(info["state"][0])
        cos_sin.append(obs[[0, 2]])
    q1 = np.array(q1)
    assert q1[-1] - q1[0] > 4 * math.pi  # more than two full turns
    assert np.max(np.abs(np.diff(q1))) < 1.0  # no 2*pi jumps
    np.testing.assert_allclose(np.array(cos_sin), np.c_[np.cos(q1), np.sin(q1)], atol=1e-12)


# ---------------------------------------------------------------------------- linearisation
def test_fd_linearisation_predicts_the_true_env_step(lin):
    rng = np.random.default_rng(0)
    n = 200
    X = np.c_[rng.uniform(-8, 8, n), rng.uniform(-2.5, 2.5, n), rng.uniform(-2, 2, (n, 2))]
    U = rng.uniform(-1, 1, (n, 2))
    env = make_env()
    env.reset(seed=0)
    true = np.empty_like(X)
    for i in range(n):
        qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
        qpos[:2], qvel[:2] = X[i, :2], X[i, 2:]
        env.set_state(qpos, qvel)
        env.step(U[i])
        true[i] = env.controller_state()
    A, B = lin(torch.from_numpy(X))
    assert A.shape == (n, 4, 4) and B.shape == (n, 4, 2) and A.dtype == torch.float64
    pred = (A @ torch.from_numpy(X)[..., None] + B @ torch.from_numpy(U)[..., None])[..., 0].numpy()
    err = np.abs(pred - true)
    assert np.median(err[:, :2]) < 1e-6 and np.median(err[:, 2:]) < 1e-4, (np.median(err[:, :2]), np.median(err[:, 2:]))
    # The Euler-copy pitfall: B's position rows must be ~0.0397 (an Euler copy gives ~0.059).
    np.testing.assert_allclose(B[:, [0, 1], [0, 1]].numpy(), 0.0397, atol=1e-3)
    np.testing.assert_allclose(B[:, [2, 3], [0, 1]].numpy(), 3.96, atol=0.02)
    # lin.step is the env step itself (same physics, limits off away from the limit)
    np.testing.assert_allclose(lin.step(X, U), true, atol=1e-12)


def test_fd_linearisation_dtype_and_joint_limit(lin):
    x = torch.tensor([[0.3, 2.999, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float32)
    A, B = lin(x)
    assert A.dtype == torch.float32 and B.dtype == torch.float32
    limited = ReacherFDLinearization(disable_limits=False)
    A_lim, B_lim = limited(x.double())
    assert B[0, 3, 1] > 3.9  # free arm: smooth
    assert B_lim[0, 3, 1] < 1.0 and A_lim[0, 3, 1].abs() > 5  # the limit enters the Jacobian
    torch.testing.assert_close(B[1].double(), B_lim[1], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="state"):
        lin(torch.zeros(3, 5))


# ---------------------------------------------------------------------------- policies
def test_inverse_kinematics_nearest_solution():
    rng = np.random.default_rng(1)
    r = rng.uniform(0.05, 0.2, 50)
    phi = rng.uniform(-np.pi, np.pi, 50)
    g = np.c_[r * np.cos(phi), r * np.sin(phi)]
    qc = np.c_[rng.uniform(-10, 10, 50), rng.uniform(-2.9, 2.9, 50)]
    q = inverse_kinematics(g, qc)
    np.testing.assert_allclose(fingertip_position(q), g, atol=1e-10)
    assert np.all(np.abs(q[:, 0] - qc[:, 0]) <= np.pi + 1e-9)  # nearest winding of q1
    assert np.all(np.abs(q[:, 1]) <= 2.95)
    # the other elbow branch is never nearer
    other = inverse_kinematics(g, np.c_[qc[:, 0], -np.sign(q[:, 1]) * 2.9])
    d_best = np.sum((q - qc) ** 2, 1)
    d_other = np.sum((np.c_[qc[:, 0] + (other[:, 0] - qc[:, 0] + np.pi) % (2 * np.pi) - np.pi, other[:, 1]] - qc) ** 2, 1)
    assert np.all(d_best <= d_other + 1e-9)


def test_expert_reaches_targets_far_above_random():
    expert = evaluate_stats(ExpertPolicy(0.1), 3, 100)
    rand = evaluate(RandomPolicy(), 3, 100)
    # Reference (30 episodes): expert sigma 0.1 ~451 +- 11, random ~2.2 on multi-goal T 500, r 0.015.
    assert expert["returns"].min() > 420, expert["returns"]
    assert expert["reached"].min() == 1.0 and np.median(expert["steps_to_reach"]) <= 10
    assert rand.mean() < 20, rand
    # deterministic for a fixed seed, noise included
    np.testing.assert_array_equal(evaluate(ExpertPolicy(0.1), 2, 100), expert["returns"][:2])


def test_hierarchical_z_true_reproduces_actions(lin):
    policy = heuristic_hierarchical_policy(noise_std=(0.05, 0.05, 0.2, 0.2),
                                           controller=make_reacher_lqr(linearization=lin))
    ds = collect(policy, 2, seed=100, progress=False)
    assert set(LOW_LEVEL_KEYS) | {"z_true"} == set(ds.keys())
    assert len(ds) == 1000 and ds.metadata["policy"]["name"] == "lqr_hierarchical"
    # reference lead oracle: ~386 +- 16 (30 episodes, no noise); this noise costs ~2 (measured)
    assert min(ds.metadata["returns"]) > 300, ds.metadata["returns"]
    k = policy.k
    starts = window_starts(ds, k)
    assert len(starts) == 200
    z = ds["z_true"]
    for l in range(1, k):
        np.testing.assert_array_equal(z[starts + l], z[starts])  # held for the whole window
    ctrl = make_reacher_lqr(linearization=lin)
    x0 = torch.from_numpy(ds["states"][starts])
    zt = torch.from_numpy(z[starts])
    ctx = ctrl.context(x0)  # one batched FD + Riccati for every window
    for l in range(k):
        u = ctrl.act(torch.from_numpy(ds["states"][starts + l]), zt, ctx, step=l).numpy()
        np.testing.assert_allclose(u, ds["actions"][starts + l], atol=1e-12, rtol=0)
    assert np.all(np.abs(z) <= 8 * math.pi + 1e-12)


def test_from_torch_actor_drives_the_lqr(lin):
    """An actor that sees only the observation (q1 through cos/sin) reproduces the lead oracle:
    relative z positions do not depend on the winding of q1."""
    oracle = LeadOracle()

    def actor(obs: torch.Tensor) -> torch.Tensor:
        o = obs[0].numpy()
        x_wrapped = np.r_[np.arctan2(o[2:4], o[0:2]), o[6:8]]
        return torch.as_tensor(oracle(o, x_wrapped)).unsqueeze(0)

    wrapped = LQRHierarchicalPolicy.from_torch_actor(actor, make_reacher_lqr(linearization=lin), obs_dtype=torch.float64)
    ref = LQRHierarchicalPolicy(oracle, make_reacher_lqr(linearization=lin))
    env = make_env(SHORT)
    obs, info = env.reset(seed=5)
    qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
    qpos[0] += 4 * math.pi  # wound arm: same observation, different unwrapped state
    env.set_state(qpos, qvel)
    obs, info = env._get_obs(), {"state": env.controller_state()}
    wrapped.reset(5)
    ref.reset(5)
    for _ in range(12):
        a, b = wrapped.act(obs, info["state"]), ref.act(obs, info["state"])
        np.testing.assert_allclose(a, b, atol=1e-9)
        np.testing.assert_allclose(wrapped.current_z, ref.current_z, atol=1e-9)
        obs, *_, info = env.step(a)
    assert abs(ref.current_z[0]) > 0.1  # the oracle is actually driving the arm


# ---------------------------------------------------------------------------- data
def test_collect_format_seeding_and_roundtrip(tmp_path):
    ds = collect(ExpertPolicy(0.3), 2, seed=11, env_config=SHORT, progress=False)
    again = collect(ExpertPolicy(0.3), 2, seed=11, env_config=SHORT, progress=False)
    for key in LOW_LEVEL_KEYS:
        np.testing.assert_array_equal(ds[key], again[key])
    assert "z_true" not in ds
    assert ds["observations"].shape == (80, 10) and ds["states"].shape == (80, 4) and ds["actions"].shape == (80, 2)
    assert ds["episode_ids"].dtype == np.int64 and list(np.unique(ds["episode_ids"])) == [0, 1]
    assert ds["timeouts"].sum() == 2 and ds["timeouts"][[39, 79]].all() and not ds["terminals"].any()
    same_ep = ds["episode_ids"][1:] == ds["episode_ids"][:-1]
    np.testing.assert_array_equal(ds["next_states"][:-1][same_ep], ds["states"][1:][same_ep])
    np.testing.assert_array_equal(ds["next_observations"][:-1][same_ep], ds["observations"][1:][same_ep])
    np.testing.assert_array_equal(ds["observations"][:, 0], np.cos(ds["states"][:, 0]))
    # episode i is reproducible alone with seed + i
    np.testing.assert_array_equal(evaluate(ExpertPolicy(0.3), 1, 12, SHORT), [ds.metadata["returns"][1]])
    path = tmp_path / "reacher.npz"
    ds.save(path)
    loaded = Dataset.load(path)
    assert loaded.metadata["env_config"] == {"episode_steps": 40, "goal_period": 20, "radius": 0.015, "k": 5}
    np.testing.assert_array_equal(loaded["states"], ds["states"])
    with pytest.raises(TypeError, match="unknown"):
        collect(ExpertPolicy(), 1, 0, env_config={"episodes_steps": 10}, progress=False)
    with pytest.raises(ValueError, match="episodes"):
        collect(ExpertPolicy(), 0, 0, progress=False)
