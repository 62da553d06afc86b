"""The exported policy format: space specs, save/load round trip, predict shapes, space checks, evaluation."""

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from litzoo.nets.actors_critics import CategoricalActor, DeterministicActor, GaussianActor
from litzoo.rl.policy import (
    Policy,
    check_space,
    evaluate_policy,
    load_policy,
    make_encoder,
    space_to_spec,
    spec_to_space,
)


def make_policy(kind: str, normalize: bool = True) -> Policy:
    torch.manual_seed(0)
    if kind == "categorical":
        obs_space, act_space = spaces.Discrete(6, start=2), spaces.Discrete(4, start=1)
        encoder = make_encoder(obs_space)
        actor = CategoricalActor(encoder.features_dim, 4, (16,))
    else:
        obs_space = spaces.Box(-1.0, 1.0, (3,), np.float32)
        act_space = spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
        encoder = make_encoder(obs_space, normalize=normalize)
        if normalize:  # non-trivial statistics, so the test sees whether they survive the round trip
            encoder.update(torch.randn(100, 3) * 3 + 1)
        actor = (DeterministicActor(encoder.features_dim, 2, (16,)) if kind == "deterministic"
                 else GaussianActor(encoder.features_dim, 2, (16,), log_std_init=-0.5))
        with torch.no_grad():  # mean outputs of order 1, so clipping to the bounds matters
            for p in actor.parameters():
                p.normal_()
    return Policy(encoder, actor, kind, obs_space, act_space)


def test_space_specs_round_trip_box_with_infinite_and_per_dimension_bounds_and_discrete_with_start():
    box = spaces.Box(np.array([-np.inf, 0.0], np.float32), np.array([np.inf, 5.0], np.float32))
    spec = space_to_spec(box)
    assert json.loads(json.dumps(spec)) == spec  # plain JSON types only
    assert spec["low"] == [-np.inf, 0.0] and spec["high"] == [np.inf, 5.0]
    assert spec_to_space(spec) == box
    uniform = spaces.Box(-2.0, 2.0, (4, 3), np.float32)
    assert space_to_spec(uniform)["low"] == -2.0  # one number when all bounds agree
    assert spec_to_space(space_to_spec(uniform)) == uniform
    discrete = spaces.Discrete(5, start=-2)
    assert spec_to_space(space_to_spec(discrete)) == discrete


def test_unsupported_space_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="MultiBinary.*Box or Discrete"):
        space_to_spec(spaces.MultiBinary(3))


@pytest.mark.parametrize("kind", ["deterministic", "gaussian", "categorical"])
def test_saved_policy_loads_with_identical_actions_and_normalisation(tmp_path, kind):
    policy = make_policy(kind)
    policy.save(tmp_path / "p", metadata={"algorithm": "test"})
    loaded = load_policy(tmp_path / "p")
    assert loaded.kind == kind
    if kind == "categorical":
        obs = np.arange(2, 8)
    else:
        obs = np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32)
        torch.testing.assert_close(loaded.encoder.normalizer.rms.mean, policy.encoder.normalizer.rms.mean)
    np.testing.assert_array_equal(loaded.predict(obs), policy.predict(obs))
    assert json.loads((tmp_path / "p" / "policy.json").read_text())["metadata"] == {"algorithm": "test"}


def test_predict_takes_single_or_batched_observations():
    box = make_policy("gaussian")
    single = box.predict(np.zeros(3, np.float32))
    assert single.shape == (2,) and single.dtype == np.float32
    batch = box.predict(np.zeros((5, 3)))
    assert batch.shape == (5, 2)
    np.testing.assert_array_equal(batch[0], single)
    cat = make_policy("categorical")
    action = cat.predict(4)
    assert np.ndim(action) == 0 and 1 <= action <= 4 and isinstance(action, np.integer)
    assert cat.predict([2, 3, 7]).shape == (3,)


def test_predict_rejects_observations_of_the_wrong_shape_or_state():
    with pytest.raises(ValueError, match=r"shape \(4,\).*expects \(3,\)"):
        make_policy("deterministic").predict(np.zeros(4))
    with pytest.raises(ValueError, match="not a state of Discrete"):
        make_policy("categorical").predict(8)  # states are 2..7


def test_deterministic_policy_maps_tanh_range_onto_the_box_bounds():
    policy = make_policy("deterministic", normalize=False)
    torch.testing.assert_close(policy.scale_action(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])),
                               torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, 0.5]]))
    actions = policy.predict(np.random.default_rng(1).uniform(-1, 1, (256, 3)))
    assert (actions[:, 0] >= -2).all() and (actions[:, 0] <= 2).all() and (actions[:, 1] >= 0).all()
    assert actions[:, 0].max() > 1.0  # uses the range beyond [-1, 1]


def test_gaussian_policy_clips_samples_to_the_bounds_and_its_mean_when_deterministic():
    policy = make_policy("gaussian", normalize=False)
    obs = np.random.default_rng(2).uniform(-1, 1, (512, 3)).astype(np.float32)
    sampled = policy.predict(obs, deterministic=False)
    assert (sampled[:, 1] >= 0).all() and (sampled[:, 1] <= 1).all()
    mean = policy.actor(policy.encoder(torch.as_tensor(obs))).detach().numpy()
    np.testing.assert_allclose(policy.predict(obs), np.clip(mean, [-2, 0], [2, 1]), rtol=1e-6)
    assert not np.allclose(sampled, policy.predict(obs))


def test_load_policy_checks_spaces_and_says_what_mismatched(tmp_path):
    make_policy("gaussian").save(tmp_path / "box")
    make_policy("categorical").save(tmp_path / "cat")
    with pytest.raises(ValueError, match=r"observation space mismatch.*shape \(3,\) != \(4,\)"):
        load_policy(tmp_path / "box", env=gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match=r"action space mismatch.*bounds high"):
        load_policy(tmp_path / "box", observation_space=spaces.Box(-1.0, 1.0, (3,)),
                    action_space=spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 2.0], np.float32)))
    with pytest.raises(ValueError, match=r"action space mismatch.*discrete n 4 != 2"):
        load_policy(tmp_path / "cat", action_space=spaces.Discrete(2, start=1))
    with pytest.raises(ValueError, match=r"observation space mismatch.*type Discrete != Box"):
        load_policy(tmp_path / "cat", observation_space=spaces.Box(0.0, 1.0, (6,)))
    ok = load_policy(tmp_path / "box", observation_space=spaces.Box(-1.0, 1.0, (3,)))
    assert ok.kind == "gaussian"
    with pytest.raises(ValueError, match="no policy.json"):
        load_policy(tmp_path)


def test_load_policy_accepts_a_vector_env_with_the_same_single_spaces(tmp_path):
    torch.manual_seed(0)
    env = gym.make("CartPole-v1")
    encoder = make_encoder(env.observation_space)
    Policy(encoder, CategoricalActor(4, 2, (8,)), "categorical", env.observation_space, env.action_space).save(tmp_path)
    envs = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 3)
    policy = load_policy(tmp_path, env=envs)
    obs, _ = envs.reset(seed=0)
    assert envs.action_space.contains(policy.predict(obs))


def test_check_space_accepts_equal_spaces_and_rejects_a_different_start():
    spec = space_to_spec(spaces.Discrete(3, start=1))
    check_space("action space", spec, spaces.Discrete(3, start=1))
    with pytest.raises(ValueError, match="discrete start 1 != 0"):
        check_space("action space", spec, spaces.Discrete(3))


class ConstantPolicy:
    def predict(self, obs, deterministic=True):
        return np.ones(np.shape(obs)[:-1], dtype=np.int64) if np.ndim(obs) > 1 else np.int64(1)


def test_evaluate_policy_vectorised_matches_sequential_episodes_with_the_same_seeds():
    vectorised = evaluate_policy(ConstantPolicy(), lambda: gym.make("CartPole-v1"), n_episodes=4, seed=7)
    sequential = evaluate_policy(ConstantPolicy(), gym.make("CartPole-v1"), n_episodes=4, seed=7)
    np.testing.assert_array_equal(vectorised["returns"], sequential["returns"])
    np.testing.assert_array_equal(vectorised["lengths"], sequential["lengths"])
    # always pushing right topples the pole within a few steps; CartPole pays 1 per step
    assert (vectorised["lengths"] < 20).all()
    np.testing.assert_array_equal(vectorised["returns"], vectorised["lengths"])


def test_load_policy_and_predict_need_no_lightning(tmp_path):
    make_policy("gaussian").save(tmp_path)
    code = (
        "import sys; import numpy as np; from litzoo.rl.policy import load_policy; "
        f"p = load_policy({str(tmp_path)!r}); a = p.predict(np.zeros(3, np.float32)); "
        "assert a.shape == (2,); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')], 'lightning imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_sample_with_log_prob_draws_from_the_policy_and_returns_its_exact_log_density():
    """The acting shortcut (no distribution object per step) must equal distribution().log_prob and
    draw with the policy's own probabilities / mean and std."""
    torch.manual_seed(0)
    features = torch.randn(4, 3)
    gaussian = GaussianActor(3, 2, (16,), log_std_init=-0.5)
    actions, log_probs = gaussian.sample_with_log_prob(features, torch.Generator().manual_seed(1))
    torch.testing.assert_close(log_probs, gaussian.log_prob(gaussian.distribution(features), actions), atol=1e-5, rtol=1e-5)
    many, _ = gaussian.sample_with_log_prob(features[:1].expand(20000, 3), torch.Generator().manual_seed(2))
    torch.testing.assert_close(many.mean(0), gaussian(features[:1])[0], atol=0.02, rtol=0)
    torch.testing.assert_close(many.std(0), gaussian.log_std.exp().detach(), atol=0.02, rtol=0)

    categorical = CategoricalActor(3, 3, (16,), orthogonal_init=False)
    actions, log_probs = categorical.sample_with_log_prob(features, torch.Generator().manual_seed(1))
    torch.testing.assert_close(log_probs, categorical.log_prob(categorical.distribution(features), actions))
    many, _ = categorical.sample_with_log_prob(features[:1].expand(20000, 3), torch.Generator().manual_seed(2))
    frequencies = torch.bincount(many, minlength=3).float() / 20000
    torch.testing.assert_close(frequencies, categorical.distribution(features[:1]).probs[0].detach(), atol=0.015, rtol=0)
    with torch.no_grad():  # a skewed policy (probabilities ~0.84 / 0.11 / 0.04): sampling must follow it
        categorical.logits[-1].bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
    probs = categorical.distribution(features[:1]).probs[0].detach()
    assert probs.max() > 0.7
    many, _ = categorical.sample_with_log_prob(features[:1].expand(40000, 3), torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.bincount(many, minlength=3).float() / 40000, probs, atol=0.01, rtol=0)
