"""Carrying an earlier trial's parameters into a search space that differs in every way."""
from __future__ import annotations

import pytest

from autotune import space
from autotune.warmstart._transfer import carry_params
from autotune.spec_types import SearchSpace

from .helpers import cat, fl, it


def carry(params, *space_params, out_of_range="clip"):
    sp = SearchSpace(tuple(space_params))
    return carry_params(params, sp, space.distributions(sp), out_of_range)


def test_value_outside_a_shrunk_range_is_clipped_to_the_nearest_bound():
    assert carry({"lr": 0.5, "wd": -1.0}, fl("lr", 0.0, 0.1), fl("wd", 0.0, 1.0)) == {
        "lr": 0.1, "wd": 0.0}


def test_value_outside_a_shrunk_range_is_dropped_in_drop_mode():
    assert carry({"lr": 0.5, "wd": 0.3}, fl("lr", 0.0, 0.1), fl("wd", 0.0, 1.0),
                 out_of_range="drop") == {"wd": 0.3}


def test_value_inside_the_range_is_kept_exactly():
    assert carry({"lr": 0.0123}, fl("lr", 1e-4, 1e-1, log=True)) == {"lr": 0.0123}


def test_log_range_clips_into_the_new_bounds():
    assert carry({"lr": 1e-6}, fl("lr", 1e-4, 1e-1, log=True)) == {"lr": 1e-4}


def test_param_new_to_the_space_is_left_for_the_sampler():
    assert carry({"lr": 0.05}, fl("lr", 0.0, 0.1), it("layers", 1, 8)) == {"lr": 0.05}


def test_param_removed_from_the_space_is_not_carried():
    assert carry({"lr": 0.05, "dropout": 0.1}, fl("lr", 0.0, 0.1)) == {"lr": 0.05}


def test_categorical_value_no_longer_a_choice_is_dropped_even_when_clipping():
    got = carry({"act": "relu", "norm": "layer"}, cat("act", "gelu", "silu"),
                cat("norm", "layer", "rms"))
    assert got == {"norm": "layer"}


def test_numeric_categorical_matches_by_value_but_not_bool_for_one():
    assert carry({"experts": 8.0}, cat("experts", 4, 8, 16)) == {"experts": 8}
    assert carry({"flag": 1}, cat("flag", True, False)) == {}


@pytest.mark.filterwarnings("ignore:The distribution is specified by")
def test_int_is_rounded_and_put_on_the_step_grid():
    got = carry({"n": 6.6, "d": 100, "k": 37}, it("n", 1, 10), it("d", 64, 512, step=64),
                it("k", 1, 20, step=2))
    # d: 100 -> 128 (nearest multiple of 64 above 64); k: clipped to 19, the top of 1..19 step 2
    assert got == {"n": 7, "d": 128, "k": 19}
    assert isinstance(got["n"], int)


def test_float_step_grid():
    got = carry({"ratio": 0.33, "x": 2.0}, fl("ratio", 0.2, 0.8, step=0.1), fl("x", 0.0, 1.0, step=0.25))
    assert got == {"ratio": pytest.approx(0.3), "x": 1.0}
    dist = space.distributions(SearchSpace((fl("ratio", 0.2, 0.8, step=0.1),)))["ratio"]
    assert dist._contains(got["ratio"])


def test_float_value_into_a_categorical_or_string_into_a_float_is_dropped():
    assert carry({"x": "big", "y": 0.5}, fl("x", 0, 1), cat("y", "a", "b")) == {}


def test_conditional_param_is_kept_when_its_condition_holds():
    sp = (cat("attention", "dense", "sparse"),
          fl("keep_ratio", 0.2, 0.8, when=(("attention", ("sparse",)),)))
    assert carry({"attention": "sparse", "keep_ratio": 0.5}, *sp) == {
        "attention": "sparse", "keep_ratio": 0.5}


def test_conditional_param_is_dropped_when_its_condition_is_false_under_the_carried_values():
    sp = (cat("attention", "dense", "sparse"),
          fl("keep_ratio", 0.2, 0.8, when=(("attention", ("sparse",)),)))
    assert carry({"attention": "dense", "keep_ratio": 0.5}, *sp) == {"attention": "dense"}


def test_conditional_param_whose_parent_is_not_carried_is_dropped_and_so_are_its_children():
    sp = (cat("attention", "flash", "sparse"),
          it("window", 32, 256, when=(("attention", ("sparse",)),)),
          it("blocks", 1, 8, when=(("window", (64, 128)),)))
    # "dense" is no longer a choice: attention goes, window and then blocks lose their condition
    assert carry({"attention": "dense", "window": 64, "blocks": 2}, *sp) == {}
