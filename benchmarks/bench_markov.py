"""``markov_dp``: the exact optimal return of a V = 1000, H = 32 Markov world vs H passes of ``max(axis=1)``."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import median_time, record
from sim import markov


def bench_markov_dp(repeats: int = 5) -> dict:
    world = markov.MarkovWorld(1, 1000, 32)
    reward = markov.make_markov_oracle(world, "linear", 0, templates=("unigram", "position", "bigram", "length"))
    ref = markov.markov_reference(world, "bigram", np.random.default_rng(1))
    Q = np.random.default_rng(0).normal(size=(world.vocab_size, world.vocab_size))

    def baseline():
        for _ in range(world.horizon):
            Q.max(axis=1)

    base = median_time(baseline, repeats)
    ours = median_time(lambda: markov.optimal_return(world, reward), repeats)
    # The same recursion without the screen: H - 1 plain max-plus products over every row of the bigram matrix.
    product = markov.MaxPlus(reward.bigram[world.first_token : world.vocab_size])
    vec, out = np.zeros(world.vocab_size), np.empty(world.vocab_size - world.first_token)

    def unscreened():
        for _ in range(world.horizon - 1):
            product.plain(vec, out)

    plain = median_time(unscreened, repeats)
    t0 = time.perf_counter()
    markov.soft_values(world, reward, ref, 0.1)
    soft = time.perf_counter() - t0
    return record(
        "markov_dp",
        ours / base,
        3.0,
        "<=",
        ours_s=ours,
        baseline_s=base,
        unscreened_ratio=round(plain / base, 4),
        soft_optimum_s=soft,
        vocab_size=world.vocab_size,
        horizon=world.horizon,
    )


BENCHMARKS = {"markov_dp": bench_markov_dp}
