"""Conservative ensemble objectives (Coste et al. 2023): mean, worst-case (wco) and uncertainty-weighted (uwo)
combinations of standardised members, against hand computation; where they are refused."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.config import compose_config
from sim.errors import ConfigError
from sim.reward_models.model import combine
from sim.run import run

# three members, predictions on 4 sequences; their "labelled" predictions (pool) set each member's standardisation
PREDS = np.array([[1.0, 2.0, 3.0, 10.0], [2.0, 4.0, 6.0, 0.0], [0.0, 1.0, 5.0, 3.0]])
POOL = np.array([[1.0, 3.0], [2.0, 6.0], [0.0, 4.0]])  # means 2, 4, 2; population sds 1, 2, 2


def test_combine_standardises_each_member_then_takes_the_mean_the_worst_or_the_variance_penalised_mean():
    z = np.array([[-1.0, 0.0, 1.0, 8.0], [-1.0, 0.0, 1.0, -2.0], [-1.0, -0.5, 1.5, 0.5]])  # (r - mu_i) / sd_i
    avg = POOL.mean(axis=0)  # the ensemble mean on the pool: [1, 13/3]; back to its mean and sd
    mu, sd = avg.mean(), avg.std()
    np.testing.assert_allclose(combine(PREDS, POOL, "mean"), mu + sd * z.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(combine(PREDS, POOL, "wco"), mu + sd * z.min(axis=0), rtol=1e-14)
    lam = 0.7
    uwo = z.mean(axis=0) - lam * z.var(axis=0)
    np.testing.assert_allclose(combine(PREDS, POOL, "uwo", lam), mu + sd * uwo, rtol=1e-14)
    # hand values of the last sequence: z = 8, -2, 0.5; wco picks the member that disagrees downwards
    assert combine(PREDS, POOL, "wco")[3] == pytest.approx(mu + sd * -2.0, rel=1e-14)
    assert combine(PREDS, POOL, "uwo", 0.0)[3] == pytest.approx(mu + sd * 6.5 / 3, rel=1e-14)


def test_combine_orders_sequences_the_same_as_the_members_when_they_agree():
    one = np.array([[0.0, 1.0, 3.0]])
    members = np.concatenate([one, 2 * one + 5, 0.5 * one - 1])  # affine copies: identical after standardising
    pool = members[:, :2]
    mean = combine(members, pool, "mean")
    slope = np.diff(mean) / np.diff(one[0])
    np.testing.assert_allclose(slope, slope[0], rtol=1e-12)  # an increasing affine map of every member
    assert slope[0] > 0
    for objective in ("wco", "uwo"):  # no disagreement: no penalty, the worst member is every member
        np.testing.assert_allclose(combine(members, pool, objective, 3.0), mean, atol=1e-12)


BASE = ["env=tiny", "pipeline=rlhf", "feedback.n=100", "feedback.flip=0.25", "agent=exact_planner"]


def test_wco_and_uwo_change_the_proxy_and_mean_keeps_the_single_models_path():
    mean = run(compose_config([*BASE, "reward_model.ensemble=4"])).metrics
    wco = run(compose_config([*BASE, "reward_model.ensemble=4", "reward_model.objective=wco"])).metrics
    uwo = run(compose_config([*BASE, "reward_model.ensemble=4", "reward_model.objective=uwo"])).metrics
    assert wco["proxy_return"] != mean["proxy_return"] and uwo["proxy_return"] != mean["proxy_return"]
    assert wco["optimal_return"] == mean["optimal_return"]  # the same world and oracle
    for m in (mean, wco, uwo):
        assert np.isfinite(m["oracle_return"]) and m["gap"] >= 0


def test_a_single_model_is_itself_under_every_objective_and_the_override_is_flagged():
    from experiments.config import inapplicable

    single = run(compose_config([*BASE, "reward_model.ensemble=0"])).metrics
    overrides = ["reward_model.objective=wco"]
    wco = run(compose_config([*BASE, "reward_model.ensemble=0", *overrides]))
    assert wco.metrics["oracle_return"] == single["oracle_return"]
    assert wco.metrics["proxy_return"] == single["proxy_return"]
    assert inapplicable(compose_config([*BASE, *overrides]), overrides) == [
        "reward_model.objective does not apply to reward_model.ensemble=0 (a single model: every objective is the "
        "model itself)"
    ]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["reward_model.objective=max", "reward_model.ensemble=3"], "reward_model.objective"),
        (["reward_model.objective=uwo", "reward_model.ensemble=3", "reward_model.uwo_lambda=-1"], "uwo_lambda"),
        (["reward_model.objective=wco", "reward_model.ensemble=3", "reward_model.pessimism=1"], "pessimism"),
        (["env=large", "reward_model.objective=wco", "reward_model.ensemble=3"], "reward_model.objective"),
    ],
)
def test_bad_objectives_are_refused_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        from sim.run import check

        check(compose_config(["pipeline=rlhf", *overrides]))
