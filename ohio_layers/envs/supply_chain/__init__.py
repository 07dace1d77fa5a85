"""Supply chain (one factory, S stores): scenario (1w3s, 1w10s, 1w10s-cap), env, behaviour policies (S-type, MPC), data."""
from .scenario import SCENARIOS, Scenario, get_scenario; from .env import SupplyChainEnv; from .policies import POLICIES, MPCPolicy, STypePolicy, make_policy; from .data import collect, evaluate, make_env, observe_as, policy_decider, run_episode  # noqa: E702,E501,F401
