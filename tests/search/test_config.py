"""The search config: defaults, YAML, overrides and the errors users see."""

import pytest

from automtl.errors import ConfigError
from automtl.search import SearchConfig, load_config


def test_defaults_follow_the_published_settings():
    cfg = SearchConfig()
    assert cfg.policy_train.policy_optimizer.name == "adam" and cfg.policy_train.policy_optimizer.lr == 0.01
    assert cfg.policy_train.weight_optimizer.lr == 0.001
    assert (cfg.policy_train.tau_init, cfg.policy_train.tau_decay) == (5.0, 0.965)
    assert cfg.policy_train.lambda_reg == 5e-4
    assert cfg.pretrain.optimizer.lr == 0.001 and cfg.post_train.optimizer.lr == 0.001


def test_yaml_round_trip_and_overrides(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("seed: 3\npolicy_train:\n  lambda_reg: 0.01\n  policy_optimizer: {lr: 0.02}\n")
    cfg = load_config(str(path), overrides=["post_train.draw=argmax", "data.batch_size=4"])
    assert cfg.seed == 3 and cfg.policy_train.lambda_reg == 0.01
    assert cfg.policy_train.policy_optimizer.lr == 0.02 and cfg.policy_train.policy_optimizer.name == "adam"
    assert cfg.post_train.draw == "argmax" and cfg.data.batch_size == 4
    again = tmp_path / "resolved.yaml"
    again.write_text(cfg.to_yaml())
    assert load_config(str(again)) == cfg


def test_overrides_leave_the_callers_mapping_alone():
    """A config mapping reused across runs (a test's shared config, a sweep's base) must not take
    one run's overrides into the next."""
    base = {"logging": {"eval_every": 4}, "policy_train": {"policy_optimizer": {"lr": 0.02}}}
    cfg = load_config(base, overrides=["logging.eval_every=0", "policy_train.policy_optimizer.lr=0.5"])
    assert cfg.logging.eval_every == 0 and cfg.policy_train.policy_optimizer.lr == 0.5
    assert base == {"logging": {"eval_every": 4}, "policy_train": {"policy_optimizer": {"lr": 0.02}}}
    assert load_config(base).logging.eval_every == 4


def test_unknown_key_says_did_you_mean(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("policy_train:\n  lamda_reg: 0.01\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (
        f"{path}: unknown config key 'policy_train.lamda_reg' (did you mean 'lambda_reg'?); policy_train takes: "
        "steps, weight_steps, policy_steps, policy_fraction, weight_optimizer, policy_optimizer, weight_scheduler, "
        "policy_scheduler, tau_init, tau_decay, tau_decay_every, tau_min, lambda_reg, reg_weights, hard"
    )


@pytest.mark.parametrize(
    "data, message",
    [
        ({"seed": "one"}, "config: seed must be an integer, got 'one'"),
        ({"post_train": {"draw": "best"}}, "config: post_train.draw must be one of sample, argmax, best_of_k; got 'best' (did you mean 'best_of_k'?)"),
        ({"policy_train": {"policy_fraction": 1.0}}, "config: policy_train.policy_fraction must be strictly between 0 and 1"),
        ({"pretrain": {"optimizer": {"betas": [0.9]}}}, "config: pretrain.optimizer.betas must be a list of 2 values, got [0.9]"),
        ({"data": {"batch_size": 0}}, "config: data.batch_size must be greater than 0, got 0"),
        ({"pretrain": 5}, "config: pretrain must be a mapping of PretrainConfig settings, got 5"),
    ],
)
def test_bad_values(data, message):
    with pytest.raises(ConfigError) as info:
        load_config(data)
    assert str(info.value).startswith(message)


def test_bad_yaml_and_bad_override(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("seed: 1\npretrain: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:3:1: not valid YAML"):
        load_config(str(path))
    with pytest.raises(ConfigError, match="an override is key.path=value"):
        load_config({}, overrides=["seed"])
    with pytest.raises(ConfigError, match="'seed' is a value, not a group of settings"):
        load_config({"seed": 1}, overrides=["seed.x=1"])


def test_a_partial_section_keeps_the_fields_own_defaults():
    cfg = load_config({"policy_train": {"policy_optimizer": {"lr": 0.05}}, "post_train": {"scheduler": {"gamma": 0.1}}})
    policy = cfg.policy_train.policy_optimizer
    assert (policy.name, policy.lr, policy.weight_decay) == ("adam", 0.05, 5e-4)
    assert cfg.policy_train.weight_optimizer.name == "sgd"
    assert (cfg.post_train.scheduler.name, cfg.post_train.scheduler.step_size, cfg.post_train.scheduler.gamma) == ("step", 4000, 0.1)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """YAML 1.1 (PyYAML) reads 1e-4 as a string; configs and --set read it as the number it is."""
    assert load_config({}, ["policy_train.lambda_reg=1e-4"]).policy_train.lambda_reg == 1e-4
    path = tmp_path / "c.yaml"
    path.write_text("policy_train:\n  lambda_reg: 3E-3\n  policy_optimizer: {name: adam, lr: 5e-2}\n")
    cfg = load_config(str(path))
    assert cfg.policy_train.lambda_reg == 3e-3 and cfg.policy_train.policy_optimizer.lr == 0.05
    assert load_config({}, ["device=2e"]).device == "2e"  # not a number: stays a string
