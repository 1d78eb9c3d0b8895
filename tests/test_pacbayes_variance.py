"""The variance decomposition behind the PAC-Bayes image-sampling decision (benchmarks/pacbayes_variance.py)
equals the variances of the block means enumerated over every possible block."""
import itertools

import numpy as np

from benchmarks.pacbayes_variance import decomposition, random_block_variance, strata, stratified_block_variance


def flip_matrix(draws=3, images=9, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice([-1.0, 0.0, 1.0], p=[0.05, 0.8, 0.15], size=(draws, images))


def test_random_block_variance_is_that_of_every_block_drawn_without_replacement():
    F, n = flip_matrix(), 3
    per_draw = []
    for row in F:
        means = [row[list(b)].mean() for b in itertools.combinations(range(len(row)), n)]
        per_draw.append(np.var(means))
    assert np.isclose(random_block_variance(F, n), np.mean(per_draw))


def test_stratified_block_variance_is_that_of_one_image_per_stratum_weighted_by_its_share():
    F = flip_matrix(images=10)
    key = np.array([3.0, -1.0, 2.5, 0.2, 7.0, 0.2, 5.0, 1.0, -2.0, 4.0])
    groups = strata(key, 3)  # sizes 4, 3, 3: unequal, so the weights matter
    assert sorted(len(g) for g in groups) == [3, 3, 4]
    assert all(key[a].max() <= key[b].min() for a, b in zip(groups, groups[1:]))  # cut along the key
    per_draw = []
    for row in F:
        picks = [sum(len(g) / len(row) * row[i] for g, i in zip(groups, choice))
                 for choice in itertools.product(*groups)]
        assert np.isclose(np.mean(picks), row.mean())  # unbiased for the whole-set drop
        per_draw.append(np.var(picks))
    assert np.isclose(stratified_block_variance(F, groups), np.mean(per_draw))


def test_a_key_that_sorts_the_flips_removes_the_image_part_and_a_useless_key_does_not():
    rng = np.random.default_rng(1)
    fragile = np.arange(64) < 16  # these images flip under every draw, the others never
    F = np.tile(fragile.astype(float), (8, 1))
    exact = decomposition(F, key=fragile.astype(float) + rng.random(64) * 0.1, n=4)
    assert exact["noise"] == 0 and exact["random_block"] > 0 and np.isclose(exact["stratified_block"], 0)
    useless = decomposition(F, key=np.arange(64) % 4, n=4)  # each stratum holds the same mix
    assert useless["stratified_block"] >= useless["random_block"] * 0.9
