"""``markov_dp``: the exact optimal return of a V = 1000, H = 32 Markov world vs H passes of ``max(axis=1)``."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import median_time, record
from sim.oracle import make_oracle
from sim.reference import make_reference
from sim.worlds import MarkovWorld
from sim.worlds.markov import MaxPlus


def bench_markov_dp(repeats: int = 5) -> dict:
    world = MarkovWorld(1, 1000, 32)
    reward = make_oracle(world, "linear", "dense", 0, templates=("unigram", "position", "bigram", "length")).reward
    world.ref = make_reference(world, "bigram", np.random.default_rng(1))
    Q = np.random.default_rng(0).normal(size=(world.vocab_size, world.vocab_size))

    def baseline():
        for _ in range(world.horizon):
            Q.max(axis=1)

    base = median_time(baseline, repeats)
    ours = median_time(lambda: world.optimal_return(reward), repeats)
    # The same recursion without the screen: H - 1 plain max-plus products over every row of the bigram matrix.
    product = MaxPlus(reward.bigram[world.first_token : world.vocab_size])
    vec, out = np.zeros(world.vocab_size), np.empty(world.vocab_size - world.first_token)

    def unscreened():
        for _ in range(world.horizon - 1):
            product.plain(vec, out)

    plain = median_time(unscreened, repeats)
    t0 = time.perf_counter()
    world.soft_values(reward, 0.1)
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
