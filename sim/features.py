"""Sparse feature templates over (state, action) pairs, on any world.

Each template maps a transition ``(s, a)`` to at most one index of its own parameter block (``-1`` where it is
inactive). A linear reward is ``r_theta(s, a) = sum_k theta[idx_k(s, a)]``; summed along a path it is
``theta . Psi(x, y)`` with additive ``Psi``.

Templates (name: dimension, what fires on ``(s, a)`` at depth ``t``, prompt ``x``, last token ``y_t``):

* ``unigram``: ``V``, the emitted token ``a``.
* ``position``: ``H * V``, position x token ``(t, a)``.
* ``bigram``: ``(V + 1) * V``, previous token x token ``(y_t, a)``; ``y_t = BOS`` (index ``V``) at depth 0.
* ``prompt``: ``P * V``, prompt x token ``(x, a)``: what makes prompts differ.
* ``length``: ``H + 1``, the response length on episode-ending transitions only.
* ``hashed``: ``n_hash``, a hash of the trigram ``(y_{t-1}, y_t, a)`` into ``n_hash`` buckets (needs the token
  before the last one: enumerated worlds only).

The first five depend on a prefix only through ``(prompt, position, last token)``: they are the *Markov* templates
that compressed worlds carry. :func:`template_index` is the one place where a template becomes an index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse

from sim.errors import ConfigError

TEMPLATES = ("unigram", "position", "bigram", "prompt", "length", "hashed")
MARKOV_TEMPLATES = ("unigram", "position", "bigram", "prompt", "length")
#: Markov templates that read the last token (the rest read only the prompt, the position and the token).
LAST_TOKEN_TEMPLATES = ("bigram",)
#: Index tables (S, A) are cached per template up to this many entries (int32: 4 bytes each).
CACHE_ENTRIES = 20_000_000


def check_templates(templates: Sequence[str], field: str = "templates") -> tuple[str, ...]:
    """Validate a list of template names.

    Raises:
        ConfigError: on an unknown or repeated name, or an empty list.
    """
    templates = tuple(templates)
    for name in templates:
        if name not in TEMPLATES:
            raise ConfigError(field, name, f"template names in {list(TEMPLATES)}")
    if len(set(templates)) != len(templates):
        raise ConfigError(field, list(templates), "each template at most once")
    if not templates:
        raise ConfigError(field, [], f"at least one of {list(TEMPLATES)}")
    return templates


def template_dim(name: str, n_prompts: int, vocab_size: int, horizon: int, n_hash: int = 256) -> int:
    """The parameter-block size of template ``name``."""
    V, H = vocab_size, horizon
    dims = {"unigram": V, "position": H * V, "bigram": (V + 1) * V, "prompt": n_prompts * V, "length": H + 1}
    return dims[name] if name != "hashed" else n_hash


def template_index(name: str, p, t, y, a, end_length, prev=None, vocab_size: int = 0, n_hash: int = 256) -> np.ndarray:
    """The index of ``(s, a)`` in template ``name``'s block (``-1`` where inactive), elementwise and broadcast.

    Args:
        p, t: prompt and depth of the state; ``y``: its last token (``-1`` or ``V`` for none);
        a: the token; ``end_length``: the response length ``a`` completes (``-1`` if it continues);
        prev: the token before ``y`` (``-1`` if none; ``hashed`` only).
    """
    V = vocab_size
    if name == "unigram":
        return np.broadcast_arrays(a, p, t)[0] + 0
    if name == "position":
        return t * V + a
    if name == "bigram":
        return np.where(np.asarray(y) < 0, V, y) * V + a
    if name == "prompt":
        return p * V + a
    if name == "length":
        return np.broadcast_arrays(end_length, p)[0] + 0
    if name == "hashed":
        if prev is None:
            raise ConfigError(
                "templates",
                name,
                f"Markov templates {list(MARKOV_TEMPLATES)} on a world that keeps "
                "only the last token (hashed looks at the two before)",
            )
        # a fixed multiplicative hash of (prev, last, a), each shifted by 1 so that "none" (-1) maps to 0
        yy = np.where(np.asarray(y) >= V, -1, y)
        h = (prev + 1) * 1_000_003 + (yy + 1) * 8_191 + (a + 1) * 131
        return (h * 2_654_435_761) % (2**32) % n_hash
    raise ConfigError("templates", name, f"template names in {list(TEMPLATES)}")


class FeatureMap:
    """A set of templates on a world, with one concatenated parameter vector.

    Args:
        world: the world.
        templates: template names (see module docstring).
        n_hash: number of buckets of the ``hashed`` template.

    Attributes:
        dims: parameter-block size per template; ``offsets``: start of each block; ``dim``: the total size.
    """

    def __init__(self, world, templates: Sequence[str], n_hash: int = 256, field: str = "templates"):
        self.world = world
        self.field = field
        self.templates = check_templates(templates, field)
        world.check_templates(self.templates, field)
        self.n_hash = n_hash
        self.dims = [template_dim(t, world.n_prompts, world.vocab_size, world.horizon, n_hash) for t in self.templates]
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(np.int64)
        self.dim = int(self.offsets[-1])
        self._tables: dict[str, np.ndarray] = {}

    def index(self, name: str, states: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """Local indices of template ``name``: (n, A) for all actions of ``states``, or (n,) for given ``actions``;
        ``-1`` where inactive."""
        if name in self._tables:
            tab = self._tables[name]
            return tab[states] if actions is None else tab[states, actions]
        w = self.world
        states = np.asarray(states)
        if actions is None:
            a = np.arange(w.vocab_size)[None, :]
            col = (slice(None), None)
        else:
            a = np.asarray(actions)
            col = (slice(None),)
        t = w.depth[states][col]
        prev = w.prev_token[states][col] if (name == "hashed" and w.prev_token is not None) else None
        return template_index(
            name,
            w.prompt[states][col],
            t,
            w.last_token[states][col],
            a,
            w.end_length(t, a) if name == "length" else None,
            prev,
            w.vocab_size,
            self.n_hash,
        )

    def table(self, name: str) -> np.ndarray:
        """Int32 (S, A): the local index of template ``name`` for every transition (cached on small worlds)."""
        if name not in self._tables:
            tab = np.ascontiguousarray(self.index(name, np.arange(self.world.n_states)), dtype=np.int32)
            if tab.size <= CACHE_ENTRIES:
                self._tables[name] = tab
            return tab
        return self._tables[name]

    def global_rows(self, states: np.ndarray) -> list[np.ndarray]:
        """Per template, the global indices (n, A) of ``states`` into the concatenated vector; ``dim`` if inactive."""
        out = []
        for name, off in zip(self.templates, self.offsets, strict=False):
            idx = self.index(name, states)
            out.append(np.where(idx >= 0, idx + off, self.dim))
        return out

    def block(self, theta: np.ndarray, name: str) -> np.ndarray:
        """The slice of ``theta`` (D,) belonging to template ``name``."""
        k = self.templates.index(name)
        return theta[self.offsets[k] : self.offsets[k + 1]]

    def values(self, theta: np.ndarray, states: np.ndarray) -> np.ndarray:
        """``theta . phi(s, a)`` for every action of ``states``: (n, A)."""
        theta = np.asarray(theta, dtype=np.float64)
        out = None
        for name in self.templates:  # each template's block with a 0 appended, which index -1 (inactive) reads
            part = np.append(self.block(theta, name), 0.0)[self.index(name, states)]
            out = part if out is None else out + part
        return out if out is not None else np.zeros((np.size(states), self.world.n_actions))

    def score_gradient(self, states: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``sum_{i, a} weights[i, a] phi(s_i, a)`` (D,) for weights (n, A) over the actions of ``states``."""
        out = np.empty(self.dim)
        w = weights.ravel()
        for name, off, dim in zip(self.templates, self.offsets, self.dims, strict=False):
            idx = self.index(name, states).ravel() + 1  # inactive (-1) lands on bin 0, which is dropped
            out[off : off + dim] = np.bincount(idx, weights=w, minlength=dim + 1)[1:]
        return out

    def table_values(self, theta: np.ndarray) -> np.ndarray:
        """``theta . phi(s, a)`` for every transition: (S, A)."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.dim,):
            raise ValueError(f"theta has shape {theta.shape}, expected ({self.dim},)")
        r = np.zeros((self.world.n_states, self.world.n_actions))
        for name in self.templates:
            w = np.append(self.block(theta, name), 0.0)  # index -1 reads the appended zero
            r += w[self.table(name)]
        return r

    def reward(self, theta: np.ndarray):
        """The linear reward of ``theta`` in the world's own form (a table, or a factored Markov reward)."""
        return self.world.linear_reward(self, np.asarray(theta, dtype=np.float64))

    def gather(self, weights: np.ndarray, states: np.ndarray | None = None) -> np.ndarray:
        """``sum_{s,a} weights[s, a] phi(s, a)`` (D,) for weights (S, A) over all states, or (n, A) over ``states``."""
        out = np.zeros(self.dim)
        w = weights.ravel()
        for name, off, dim in zip(self.templates, self.offsets, self.dims, strict=False):
            idx = (self.table(name) if states is None else self.index(name, states)).ravel().astype(np.int64)
            idx = np.where(idx >= 0, idx, dim)
            out[off : off + dim] += np.bincount(idx, weights=w, minlength=dim + 1)[:dim]
        return out

    def design(self, states: np.ndarray, actions: np.ndarray) -> sparse.csr_matrix:
        """Sparse (n, D) rows ``phi(s_i, a_i)``."""
        rows, cols = [], []
        for name, off in zip(self.templates, self.offsets, strict=False):
            idx = self.index(name, states, actions).astype(np.int64)
            keep = idx >= 0
            rows.append(np.flatnonzero(keep))
            cols.append(idx[keep] + off)
        r, c = np.concatenate(rows), np.concatenate(cols)
        return sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(np.size(states), self.dim))

    def sequences(self, seqs) -> sparse.csr_matrix:
        """Sparse sequence features ``Psi (n, D) = sum_{(s, a) on the path} phi(s, a)`` of a batch of sequences."""
        states, actions, mask = self.world.paths(seqs)
        n = seqs.n
        rows, cols = [], []
        row_of = np.broadcast_to(np.arange(n)[:, None], mask.shape)[mask]
        s, a = states[mask], actions[mask]
        for name, off in zip(self.templates, self.offsets, strict=False):
            idx = self.index(name, s, a).astype(np.int64)
            keep = idx >= 0
            rows.append(row_of[keep])
            cols.append(idx[keep] + off)
        r, c = np.concatenate(rows), np.concatenate(cols)
        return sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(n, self.dim))
