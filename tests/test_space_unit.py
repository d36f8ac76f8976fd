"""The one encoding of a parameter value to the unit interval and back (``space.to_unit`` /
``from_unit``), which the evolutionary and hybrid samplers and the warm start share. Values are
fresh random draws each run; the seed is in the failure message."""
from __future__ import annotations

import math
import secrets

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from autotune import space

DISTRIBUTIONS = {
    "float": FloatDistribution(-3.0, 7.5),
    "log": FloatDistribution(1e-5, 1e-1, log=True),
    "step": FloatDistribution(0.1, 0.9, step=0.1),
    "int": IntDistribution(1, 4),
    "int_log": IntDistribution(1, 1024, log=True),
    "int_step": IntDistribution(16, 256, step=16),
    "categorical": CategoricalDistribution(["gelu", 2, None, True, 1.5]),
}


def fresh_rng() -> tuple[int, np.random.Generator]:
    seed = secrets.randbits(32)
    return seed, np.random.default_rng(seed)


def random_values(dist, rng: np.random.Generator, n: int = 200) -> list:
    """Members of ``dist``: any point of a continuous range (log-uniform where log), any grid
    value of an int or stepped one, any choice."""
    if isinstance(dist, CategoricalDistribution):
        return [dist.choices[i] for i in rng.integers(len(dist.choices), size=n)]
    if dist.step is not None:
        levels = int(round((dist.high - dist.low) / dist.step)) + 1
        values = [dist.low + k * dist.step for k in rng.integers(levels, size=n)]
        return [int(v) if isinstance(dist, IntDistribution) else round(float(v), 10) for v in values]
    if dist.log:
        return [float(v) for v in np.exp(rng.uniform(math.log(dist.low), math.log(dist.high), n))]
    return [float(v) for v in rng.uniform(dist.low, dist.high, n)]


def is_member(dist, value) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return space.choice_index(dist.choices, value) is not None
    if not dist.low <= value <= dist.high:
        return False
    if isinstance(dist, IntDistribution):
        return type(value) is int and (value - dist.low) % dist.step == 0
    if dist.step is None:
        return type(value) is float
    k = (value - dist.low) / dist.step
    return type(value) is float and abs(k - round(k)) < 1e-9


@pytest.mark.parametrize("kind", sorted(DISTRIBUTIONS))
def test_encode_then_decode_gives_the_value_back(kind):
    dist = DISTRIBUTIONS[kind]
    seed, rng = fresh_rng()
    for value in random_values(dist, rng):
        u = space.to_unit(dist, value)
        assert 0.0 <= u <= 1.0, (seed, value, u)
        back = space.from_unit(dist, u)
        assert type(back) is type(value), (seed, value, back)
        if isinstance(dist, FloatDistribution) and dist.step is None:
            assert back == pytest.approx(value, rel=1e-9), (seed, value, back)
        else:
            assert back == value, (seed, value, back)


@pytest.mark.parametrize("kind", sorted(DISTRIBUTIONS))
def test_every_point_of_the_interval_decodes_to_a_member_near_it(kind):
    dist = DISTRIBUTIONS[kind]
    seed, rng = fresh_rng()
    for u in rng.uniform(0.0, 1.0, 200):
        value = space.from_unit(dist, u)
        assert is_member(dist, value), (seed, u, value)
        if isinstance(dist, CategoricalDistribution):   # the choice whose cell holds u
            n = len(dist.choices)
            assert space.to_unit(dist, value) == (math.floor(u * n) + 0.5) / n, (seed, u, value)
        elif isinstance(dist, FloatDistribution) and dist.step is None:
            assert space.to_unit(dist, value) == pytest.approx(u, abs=1e-9), (seed, u, value)
        else:   # each grid value owns half a step either side: u lies in the cell of its value
            h = dist.step / 2
            cells = FloatDistribution(dist.low - h, dist.high + h, log=dist.log)
            below, above = space.to_unit(cells, value - h), space.to_unit(cells, value + h)
            assert below - 1e-9 <= u <= above + 1e-9, (seed, u, value)


@pytest.mark.parametrize("dist,shares", [
    (IntDistribution(1, 4), {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}),
    (FloatDistribution(0.0, 1.0, step=0.5), {0.0: 1 / 3, 0.5: 1 / 3, 1.0: 1 / 3}),
    (CategoricalDistribution(["a", "b"]), {"a": 0.5, "b": 0.5}),
])
def test_every_value_of_a_grid_owns_an_equal_share_of_the_interval(dist, shares):
    u = (np.arange(6000) + 0.5) / 6000
    decoded = [space.from_unit(dist, x) for x in u]
    for value, share in shares.items():
        assert sum(d == value for d in decoded) / len(u) == pytest.approx(share, abs=1e-3)


def test_a_log_parameter_is_encoded_on_its_log_scale():
    dist = FloatDistribution(1e-4, 1e-2, log=True)
    assert space.to_unit(dist, 1e-3) == pytest.approx(0.5)
    assert space.from_unit(dist, 0.25) == pytest.approx(10 ** -3.5)


def test_values_outside_the_range_clamp_onto_its_ends():
    dist = FloatDistribution(0.0, 1.0)
    assert space.to_unit(dist, -5.0) == 0.0 and space.to_unit(dist, 9.0) == 1.0
    assert space.from_unit(dist, -0.5) == 0.0 and space.from_unit(dist, 1.5) == 1.0


def test_a_categorical_tells_true_from_1_and_refuses_what_is_no_choice():
    dist = CategoricalDistribution([1, True])
    assert space.from_unit(dist, space.to_unit(dist, True)) is True
    assert space.from_unit(dist, space.to_unit(dist, 1)) == 1
    with pytest.raises(ValueError, match="not one of"):
        space.to_unit(dist, "x")


@pytest.mark.parametrize("kind", ["float", "log", "step", "int", "int_log", "int_step"])
def test_snap_to_grid_is_encode_of_decode_vectorized(kind):
    dist = DISTRIBUTIONS[kind]
    seed, rng = fresh_rng()
    u = rng.uniform(-0.1, 1.1, 300)
    expected = [space.to_unit(dist, space.from_unit(dist, x)) for x in u]
    np.testing.assert_allclose(space.snap_to_grid(dist, u), expected, atol=1e-12, err_msg=str(seed))
