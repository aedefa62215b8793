"""budget.choose: the exact multiple-choice knapsack against brute force, and its errors."""

import itertools
import random

import pytest

from deepzip.budget import Option, choose, total_bytes


def brute_force(options, budget):
    best = None
    for combo in itertools.product(*options.values()):
        size, cost = sum(o.bytes for o in combo), sum(o.cost for o in combo)
        if size <= budget and (best is None or cost < best[0]):
            best = (cost, combo)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_choose_matches_brute_force_on_random_instances(seed):
    rng = random.Random(seed)
    options = {f"layer{i}": [Option({"k": k}, rng.randint(10, 400), rng.uniform(0, 5)) for k in range(rng.randint(1, 6))]
               for i in range(rng.randint(1, 4))}
    budget = rng.randint(min(o.bytes for o in sum(options.values(), [])) * len(options), 1200)
    expected = brute_force(options, budget)
    if expected is None:
        with pytest.raises(ValueError, match="no choice of the measured options fits"):
            choose(options, budget, grid=budget)  # grid = budget: one byte per cell, exact
        return
    chosen = choose(options, budget, grid=budget)
    assert list(chosen) == list(options)
    assert total_bytes(chosen) <= budget
    assert sum(o.cost for o in chosen.values()) == pytest.approx(expected[0])


def test_a_coarse_grid_never_exceeds_the_budget():
    options = {"a": [Option({"s": 0.9}, 1001, 1.0), Option({"s": 0.5}, 4999, 0.0)],
               "b": [Option({"s": 0.9}, 999, 2.0), Option({"s": 0.5}, 5001, 0.0)]}
    chosen = choose(options, 6000, grid=10)  # cells of 600 bytes: 4999 -> 9 cells, 999 -> 2: 11 > 10
    assert total_bytes(chosen) <= 6000
    assert {n: o.settings["s"] for n, o in chosen.items()} == {"a": 0.9, "b": 0.9}
    exact = choose(options, 6000, grid=6000)
    assert {n: o.settings["s"] for n, o in exact.items()} == {"a": 0.5, "b": 0.9}  # 4999 + 999 = 5998


def test_the_trade_follows_the_costs():
    # Layer "big" is cheap to compress, "small" is sensitive: the budget goes to "small".
    options = {"big": [Option({"bits": 2}, 100, 0.1), Option({"bits": 8}, 400, 0.0)],
               "small": [Option({"bits": 2}, 50, 3.0), Option({"bits": 8}, 200, 0.0)]}
    chosen = choose(options, 300)
    assert chosen["big"].settings == {"bits": 2} and chosen["small"].settings == {"bits": 8}


@pytest.mark.parametrize("options, budget, error, match", [
    ({"a": [Option({}, 10, 0.0)]}, 0, ValueError, "positive number of bytes"),
    ({"a": [Option({}, 10, 0.0)]}, 2.5, ValueError, "positive number of bytes"),
    ({}, 10, ValueError, "no layers"),
    ({"a": []}, 10, ValueError, "has no options"),
    ({"a": [(1, 2)]}, 10, TypeError, "budget.Option"),
    ({"a": [Option({}, 10, float("nan"))]}, 10, ValueError, "cost finite"),
    ({"a": [Option({}, 11, 0.0)]}, 10, ValueError, "the smallest need 11"),
])
def test_bad_inputs_say_what_is_wrong(options, budget, error, match):
    with pytest.raises(error, match=match):
        choose(options, budget)
