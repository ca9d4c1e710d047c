"""Sparse feature templates over (state, action) pairs, as index arrays.

Each template maps every transition ``(s, a)`` to at most one index of its own parameter
block (``-1`` where it is inactive). A linear reward is ``r_theta(s, a) = sum_k theta[idx_k(s, a)]``;
summed along a path it is ``theta . Psi(x, y)`` with additive ``Psi``.

Templates (name: dimension, what fires on ``(s, a)``):

* ``unigram``: ``V``, the emitted token ``a``.
* ``position``: ``H * V``, position x token ``(t, a)`` with ``t = depth(s)``.
* ``bigram``: ``(V + 1) * V``, previous token x token ``(y_t, a)``; ``y_t = BOS`` (index ``V``) at depth 0.
* ``prompt``: ``P * V``, prompt x token ``(x, a)``: what makes prompts differ.
* ``length``: ``H + 1``, the response length on episode-ending transitions only (see ``TextMDP.end_length``).
* ``hashed``: ``n_hash``, a hash of the trigram ``(y_{t-1}, y_t, a)`` into ``n_hash`` buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.errors import ConfigError
from sim.mdp import TextMDP

TEMPLATES = ("unigram", "position", "bigram", "prompt", "length", "hashed")


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


def template_dim(mdp: TextMDP, name: str, n_hash: int = 256) -> int:
    """The parameter-block size of template ``name`` on ``mdp``."""
    V, H = mdp.vocab_size, mdp.horizon
    dims = {
        "unigram": V,
        "position": H * V,
        "bigram": (V + 1) * V,
        "prompt": mdp.n_prompts * V,
        "length": H + 1,
    }
    return dims[name] if name != "hashed" else n_hash


def template_index(mdp: TextMDP, name: str, n_hash: int = 256) -> np.ndarray:
    """Int32 array (S, A): the index of ``(s, a)`` in template ``name``'s block, ``-1`` if inactive."""
    S, V = mdp.n_states, mdp.vocab_size
    a = np.arange(V, dtype=np.int64)[None, :]
    if name == "unigram":
        idx = np.broadcast_to(a, (S, V))
    elif name == "position":
        idx = mdp.depth[:, None] * V + a
    elif name == "bigram":
        prev = np.where(mdp.last_token < 0, V, mdp.last_token)
        idx = prev[:, None] * V + a
    elif name == "prompt":
        idx = mdp.prompt[:, None] * V + a
    elif name == "length":
        idx = mdp.end_length()
    elif name == "hashed":
        # a fixed multiplicative hash of (prev, last, a), each shifted by 1 so that "none" (-1) maps to 0
        h = (mdp.prev_token[:, None] + 1) * 1_000_003 + (mdp.last_token[:, None] + 1) * 8_191 + (a + 1) * 131
        idx = (h * 2_654_435_761) % (2**32) % n_hash
    else:
        raise ConfigError("templates", name, f"template names in {list(TEMPLATES)}")
    return np.ascontiguousarray(idx, dtype=np.int32)


class FeatureMap:
    """A set of templates with a concatenated parameter vector.

    Args:
        mdp: the world.
        templates: template names (see module docstring).
        n_hash: number of buckets of the ``hashed`` template.

    Attributes:
        dims: parameter-block size per template.
        offsets: start of each block in the concatenated vector; ``dim`` is the total size.
    """

    def __init__(self, mdp: TextMDP, templates: Sequence[str], n_hash: int = 256):
        self.mdp = mdp
        self.templates = check_templates(templates)
        self.n_hash = n_hash
        self.dims = [template_dim(mdp, t, n_hash) for t in self.templates]
        self.offsets = np.concatenate([[0], np.cumsum(self.dims)]).astype(np.int64)
        self.dim = int(self.offsets[-1])
        self._index: dict[str, np.ndarray] = {}

    def index(self, name: str) -> np.ndarray:
        """Int32 array (S, A): the local index of template ``name`` (cached), ``-1`` if inactive."""
        if name not in self._index:
            self._index[name] = template_index(self.mdp, name, self.n_hash)
        return self._index[name]

    def block(self, theta: np.ndarray, name: str) -> np.ndarray:
        """The slice of ``theta`` (D,) belonging to template ``name``."""
        k = self.templates.index(name)
        return theta[self.offsets[k] : self.offsets[k + 1]]

    def reward(self, theta: np.ndarray) -> np.ndarray:
        """The linear reward table r[S, A] = sum_k theta[idx_k(s, a)].

        Args:
            theta: float array (D,) over the concatenated templates.
        """
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.dim,):
            raise ValueError(f"theta has shape {theta.shape}, expected ({self.dim},)")
        r = np.zeros((self.mdp.n_states, self.mdp.n_actions))
        for name in self.templates:
            w = np.append(self.block(theta, name), 0.0)  # index -1 reads the appended zero
            r += w[self.index(name)]
        return r


def terminal_transitions(mdp: TextMDP) -> tuple[np.ndarray, np.ndarray]:
    """The episode-ending transitions ``(s, a)`` in row-major order: one per complete sequence.

    This order is the canonical order of complete sequences everywhere in rmsim.
    """
    s, a = np.nonzero(mdp.terminal_mask())
    return s.astype(np.int64), a.astype(np.int64)


def sequence_features(fm: FeatureMap):
    """Sparse sequence features ``Psi(x, y) = sum_{(s, a) on the path} phi(s, a)``.

    Built level by level: the path features of a child are those of its parent plus the parent transition's
    one-hots, so no path is ever walked.

    Returns:
        scipy.sparse CSR matrix (n_sequences, D), rows in the order of :func:`terminal_transitions`.
    """
    from scipy import sparse

    mdp = fm.mdp
    f, b = mdp.first_token, mdp.branching

    def onehots(states: np.ndarray, actions: np.ndarray):
        rows, cols = [], []
        for name, off in zip(fm.templates, fm.offsets, strict=False):
            idx = fm.index(name)[states, actions].astype(np.int64)
            keep = idx >= 0
            rows.append(np.flatnonzero(keep))
            cols.append(idx[keep] + off)
        rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
        return sparse.csr_matrix((np.ones(rows_.size), (rows_, cols_)), shape=(states.size, fm.dim))

    lo, hi = mdp.level(0)
    levels = [sparse.csr_matrix((hi - lo, fm.dim))]  # path features of each state, per level
    for t in range(mdp.horizon - 1):
        lo, hi = mdp.level(t)
        parent = np.repeat(np.arange(lo, hi), b)
        token = np.tile(np.arange(f, mdp.vocab_size), hi - lo)
        levels.append(levels[t][parent - lo] + onehots(parent, token))
    path = sparse.vstack(levels, format="csr")
    s, a = terminal_transitions(mdp)
    return (path[s] + onehots(s, a)).tocsr()
