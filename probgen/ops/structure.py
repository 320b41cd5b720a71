"""Structure learning for discrete Bayesian networks, and structure metrics.

Score-based search (greedy hill climbing with add / delete / reverse moves, and tabu
search) over DAGs with a decomposable score — BIC, BDeu, K2 (Heckerman, Geiger &
Chickering 1995; Koller & Friedman 2009, §18.3-18.4) — cached per (child, parent set);
the Chow-Liu tree (Chow & Liu 1968); the tree-augmented naive Bayes (TAN, Friedman,
Geiger & Goldszmidt 1997); and PC-stable (Spirtes, Glymour & Scheines 2000; Colombo &
Maathuis 2014) with G² / χ² tests, v-structures, Meek (1995) rules and a DAG extension
of the CPDAG (Dor & Tarsi 1992). With missing cells the search is structural EM
(Friedman 1997): expected counts at the current network, from a weighted completion of
the incomplete rows, alternate with a search on the expected-count scores.

Data here are ``(N, V)`` int64 state indices (``-1`` missing) as
``BayesianNetwork.check_data`` returns; family counts come from one ``bincount`` over
mixed-radix codes of the family's columns (no loop over rows).

This module is core: it takes the network class from its caller (``learn_structure``
builds whatever class it is given) and duck-types networks (``variables``, ``parents``,
``cards``, ``tables``).
"""
from __future__ import annotations

import itertools
import math
from collections import deque
from typing import Any, Iterable

import networkx as nx
import numpy as np
import torch
from scipy.special import gammaln

from probgen.progress import progress as bar
from probgen.registry import check_options

METHODS = ("hill-climb", "tabu", "chow-liu", "tan", "pc")
SCORES = ("bic", "bdeu", "k2")
CI_TESTS = ("g2", "chi2")
DOF_RULES = ("adjusted", "full")
#: families whose joint table has more cells than this are counted sparsely (np.unique)
DENSE_CELLS = 1 << 22
#: an incomplete row is completed exactly (every joint state of its missing cells) when it
#: has at most this many completions; beyond, by likelihood weighting with ``LW_PARTICLES``
ENUMERATE_COMPLETIONS = 256
LW_PARTICLES = 64


# ---- counting and scores -------------------------------------------------------------
class Counts:
    """Family counts of complete (possibly weighted) rows.

    Args: ``x`` ``(M, V)`` int64 state indices (no -1), ``cards`` ``(V,)``, ``weights``
    ``(M,)`` (expected counts: a weighted completion; ``None`` = 1 each), ``n`` the number
    of cases the counts stand for (BIC's sample size; default ``sum(weights)``)."""

    def __init__(self, x: np.ndarray, cards: list[int], weights: np.ndarray | None = None,
                 n: float | None = None):
        self.x = np.ascontiguousarray(x, dtype=np.int64)
        self.columns = np.ascontiguousarray(self.x.T)  # one contiguous array per variable
        self.cards = [int(c) for c in cards]
        self.w = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.n = float(len(self.x) if self.w is None else self.w.sum()) if n is None else float(n)

    def state_ids(self) -> np.ndarray:
        """``(V, N)``: each cell's state as a global index among all variables' states
        (variable ``u``'s states are ``offset[u] .. offset[u] + cards[u] - 1``)."""
        if getattr(self, "_state_ids", None) is None:
            off = np.concatenate([[0], np.cumsum(self.cards)[:-1]]).astype(np.int64)
            self._state_ids = self.columns + off[:, None]
        return self._state_ids

    def table(self, cols: Iterable[int]) -> np.ndarray:
        """Dense counts of the joint states of ``cols``, shape ``cards[cols]``."""
        cols = list(cols)
        shape = tuple(self.cards[c] for c in cols)
        lin = self._codes(cols)
        return np.bincount(lin, weights=self.w, minlength=math.prod(shape)).astype(np.float64).reshape(shape)

    def _codes(self, cols: list[int]) -> np.ndarray:
        if math.prod(self.cards[c] for c in cols) >= 2 ** 62:
            raise ValueError(f"a family of {len(cols)} variables has too many joint states to count; "
                             "lower max_parents")
        if not cols:
            return np.zeros(len(self.x), dtype=np.int64)
        lin = self.columns[cols[0]].copy()
        for c in cols[1:]:  # mixed radix, last column fastest
            lin *= self.cards[c]
            lin += self.columns[c]
        return lin

    def family(self, child: int, parents: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int, int]:
        """The non-zero counts ``N_ijk`` and ``N_ij`` of ``child`` given ``parents``, with
        ``q`` (parent configurations) and ``r`` (child states)."""
        r = self.cards[child]
        q = math.prod(self.cards[p] for p in parents)
        if q * r <= DENSE_CELLS:
            c = self.table(list(parents) + [child]).reshape(q, r)
            nij = c.sum(1)
            return c[c > 0], nij[nij > 0], q, r
        lin = self._codes(list(parents) + [child])
        u, inv = np.unique(lin, return_inverse=True)
        nijk = np.bincount(inv, weights=self.w).astype(np.float64)
        pu, pinv = np.unique(u // r, return_inverse=True)
        nij = np.bincount(pinv, weights=nijk)
        return nijk[nijk > 0], nij[nij > 0], q, r


def local_score(counts: Counts, child: int, parents: tuple[int, ...], score: str, ess: float = 10.0) -> float:
    """The decomposable score of one family. Unobserved cells contribute zero to every
    score, so only the non-zero counts are summed.

    - ``bic``: ``sum N_ijk log(N_ijk / N_ij) - (log N / 2) q (r - 1)`` (Schwarz 1978)
    - ``k2``: ``sum_j [lgamma(r) - lgamma(N_ij + r) + sum_k lgamma(N_ijk + 1)]`` (Cooper & Herskovits 1992)
    - ``bdeu``: ``sum_j [lgamma(a) - lgamma(N_ij + a) + sum_k (lgamma(N_ijk + b) - lgamma(b))]``
      with ``a = ess / q``, ``b = ess / (q r)`` (Heckerman et al. 1995)."""
    nijk, nij, q, r = counts.family(child, parents)
    if score == "bic":
        ll = float(np.sum(nijk * np.log(nijk)) - np.sum(nij * np.log(nij)))
        return ll - 0.5 * math.log(counts.n) * q * (r - 1)
    if score == "k2":
        return float(len(nij) * gammaln(r) - np.sum(gammaln(nij + r)) + np.sum(gammaln(nijk + 1)))
    a, b = ess / q, ess / (q * r)
    return float(len(nij) * gammaln(a) - np.sum(gammaln(nij + a)) + np.sum(gammaln(nijk + b))
                 - len(nijk) * gammaln(b))


def _segment_scores(c: np.ndarray, seg: np.ndarray, nij: np.ndarray, pseg: np.ndarray, q: np.ndarray,
                    r: int, n: float, k: int, score: str, ess: float) -> np.ndarray:
    """`local_score` of ``k`` families at once from their concatenated counts: cells
    ``c`` of family ``seg``, parent-configuration totals ``nij`` of family ``pseg``, ``q``
    parent configurations per family, ``r`` child states."""
    cz, nz = c > 0, nij > 0
    c, seg, nij, pseg = c[cz], seg[cz], nij[nz], pseg[nz]
    per = lambda w, s: np.bincount(s, weights=w, minlength=k)  # noqa: E731
    if score == "bic":
        return per(c * np.log(c), seg) - per(nij * np.log(nij), pseg) - 0.5 * math.log(n) * q * (r - 1)
    if score == "k2":
        return per(np.full(len(nij), gammaln(r)), pseg) - per(gammaln(nij + r), pseg) + per(gammaln(c + 1), seg)
    a, b = ess / q, ess / (q * r)
    return (per(gammaln(a[pseg]) - gammaln(nij + a[pseg]), pseg)
            + per(gammaln(c + b[seg]) - gammaln(b[seg]), seg))


class Scorer:
    """Local scores cached per (child, parent set), and the score changes of every single-edge
    move into a child cached per (child, parent set): a search revisiting a family (after a
    move is undone, or in another tie-breaking restart) re-scores nothing."""

    def __init__(self, counts: Counts, score: str, ess: float):
        self.counts, self.score, self.ess = counts, score, ess
        self.cache: dict = {}
        self.moves_cache: dict = {}

    def moves(self, child: int, parents: frozenset, room: bool) -> tuple[float, np.ndarray, np.ndarray]:
        """``(s, add, delete)`` for one family: ``s = self(child, parents)``; ``add[u]`` the
        gain of adding ``u -> child`` (``-inf`` for ``u`` in ``parents``, ``u = child``, or
        every ``u`` when ``room`` is False: a full parent set takes no additions);
        ``delete[u]`` the gain of deleting ``u -> child`` (``-inf`` unless ``u`` is a parent).
        Both ``(V,)``, read-only (shared through the cache)."""
        key = (child, parents, room)
        hit = self.moves_cache.get(key)
        if hit is not None:
            return hit
        v = len(self.counts.cards)
        cur = self(child, parents)
        add = np.full(v, -np.inf)
        dele = np.full(v, -np.inf)
        for u in parents:
            dele[u] = self(child, parents - {u}) - cur
        if room:
            cand = [u for u in range(v) if u != child and u not in parents]
            if cand:
                add[cand] = self.add_one(child, parents, cand) - cur
        add.flags.writeable = dele.flags.writeable = False
        hit = self.moves_cache[key] = (cur, add, dele)
        return hit

    def add_one(self, child: int, parents: set, candidates: list[int]) -> np.ndarray:
        """``self(child, parents | {u})`` for every ``u`` in ``candidates``, counted together:
        one ``bincount`` of ``state_id(u) * q0 r + code(parents, child)`` over every column
        ``u`` at once (``state_id``: the global index of ``u``'s state among all variables'
        states, so the families' tables land in disjoint blocks ``(r_u, q0, r)``; one pass
        over the ``(V, N)`` cells, no loop over candidates or rows). The scores are cached."""
        cnt = self.counts
        r = cnt.cards[child]
        pa = sorted(parents)
        q0 = math.prod(cnt.cards[p] for p in pa)
        cards = np.asarray(cnt.cards)
        if q0 * r * int(cards.sum()) > DENSE_CELLS:  # large tables: one family at a time, sparsely
            return np.array([self(child, parents | {u}) for u in candidates])
        us = np.asarray(candidates, dtype=np.int64)
        base = cnt._codes(pa + [child])  # (N,) code of (parents, child), child fastest
        codes = cnt.state_ids() * (q0 * r)
        codes += base[None, :]
        c = np.bincount(codes.ravel(), weights=None if cnt.w is None else np.tile(cnt.w, len(cards)),
                        minlength=int(cards.sum()) * q0 * r).astype(np.float64)
        v = len(cards)
        seg = np.repeat(np.arange(v), cards * q0 * r)  # the cells' family (column u)
        nij = c.reshape(-1, r).sum(1)  # parent configurations (u's state, parents' configuration)
        pseg = np.repeat(np.arange(v), cards * q0)
        scores = _segment_scores(c, seg, nij, pseg, (cards * q0).astype(np.float64), r, cnt.n, v,
                                 self.score, self.ess)[us]
        self.cache.update({(child, frozenset(parents | {u})): sc for u, sc in zip(us.tolist(), scores.tolist())})
        return scores

    def __call__(self, child: int, parents: Iterable[int]) -> float:
        key = (child, frozenset(parents))
        s = self.cache.get(key)
        if s is None:
            s = self.cache[key] = local_score(self.counts, child, tuple(sorted(key[1])), self.score, self.ess)
        return s


# ---- score-based search ------------------------------------------------------------------
def _closure(a: np.ndarray) -> np.ndarray:
    """``R[u, v]``: a directed path of length >= 1 from u to v (repeated squaring, on
    float32 so the products are BLAS calls; entries are path counts capped at 1)."""
    r = a.astype(np.float32)
    while True:  # squaring: paths double in length per round
        nxt = np.minimum(r + r @ r, 1.0)
        if (nxt == r).all():
            return r > 0
        r = nxt


def search(scorer: Scorer, v: int, *, start: np.ndarray, allowed: np.ndarray, required: np.ndarray,
           max_parents: int, tabu_length: int = 0, patience: int = 0, max_iter: int | None = None,
           progress: bool | None = None, desc: str = "hill-climb", seeds: Iterable[int | None] = (None,),
           sideways: bool = False) -> list[np.ndarray]:
    """Greedy search over DAGs by single-edge additions, deletions and reversals
    (Koller & Friedman 2009, §18.4.3), one search per tie-breaking seed in ``seeds``, run
    side by side. ``tabu_length = 0``: hill climbing (the best improving move until none
    improves). ``tabu_length > 0``: tabu search — the best move not undoing one of the last
    ``tabu_length`` moves is taken even when it lowers the score, until ``patience`` moves
    pass without beating the best graph, which is returned. ``sideways=True`` (with
    ``tabu_length > 0``): hill climbing with sideways moves (Russell & Norvig 2010, §4.1.1)
    — the same, but a move that lowers the score ends the search, so only improving and
    equal-score moves are taken. Equal-score moves are the reversals of covered edges,
    which a score-equivalent score (BIC, BDeu) rates alike: they walk the DAGs of one
    equivalence class (Chickering 1995), from which an improving move a plain climb cannot
    see may become available. Ties (moves of equal gain up to rounding) go to the move of
    highest random priority, drawn from the search's seed.

    Adjacency matrices ``(V, V)`` bool, ``A[u, w]`` = edge u -> w: ``start``, ``allowed``
    (not black-listed), ``required`` (white-listed, never deleted or reversed). The ``S``
    searches' states are stacked ``(S, V, V)``, so finding every search's best legal move
    is one set of array operations per step, whatever ``S``; each search's moves are the
    ones it would make alone. Score gains are kept per child column and re-read only for
    children whose parents changed (the score is decomposable), from `Scorer.moves`'
    cache. Reachability is updated in place after an addition (every ancestor of ``u``,
    ``u`` included, now reaches every descendant of ``j``, ``j`` included) and recomputed
    only after a deletion or a reversal. Returns each search's graph, in ``seeds`` order."""
    seeds = list(seeds)
    ns = len(seeds)
    a = np.repeat(start[None], ns, axis=0)
    eye = np.eye(v, dtype=bool)
    priority = np.stack([np.random.default_rng(sd).random((3, v, v)) for sd in seeds])
    cur = np.zeros((ns, v))
    d_add = np.full((ns, v, v), -np.inf)  # d_add[s, u, j]: gain of adding u -> j
    d_del = np.full((ns, v, v), -np.inf)  # d_del[s, u, j]: gain of deleting u -> j
    npar = a.sum(1)

    def refresh(i: int, j: int) -> None:
        pa = frozenset(np.flatnonzero(a[i, :, j]).tolist())
        cur[i, j], d_add[i, :, j], d_del[i, :, j] = scorer.moves(j, pa, len(pa) < max_parents)

    for j in range(v):
        refresh(0, j)
    cur[1:], d_add[1:], d_del[1:] = cur[0], d_add[0], d_del[0]
    r = np.repeat(_closure(start)[None], ns, axis=0)
    tabu = [deque() for _ in range(ns)]
    banned = np.zeros((ns, 3, v, v), dtype=np.int32)  # moves on the tabu list (counts)
    best_a, best = a.copy(), cur.sum(1)
    since_best = np.zeros(ns, dtype=np.int64)
    live = np.ones(ns, dtype=bool)
    base_add = allowed & ~eye
    base_rev = ~required & allowed.T
    it = 0
    with bar(total=None if max_iter is None else max_iter * ns, desc=desc, enabled=progress) as pbar:
        while live.any() and (max_iter is None or it < max_iter):
            it += 1
            idx = np.flatnonzero(live)
            al, rl = a[idx], r[idx]
            room = npar[idx] < max_parents
            ok = np.empty((len(idx), 3, v, v), dtype=bool)
            ok[:, 0] = base_add & ~al & ~rl.transpose(0, 2, 1) & room[:, None, :]  # no path j ~> u
            ok[:, 1] = al & ~required
            # reversing u -> j is acyclic unless u reaches j another way: u -> w ~> j
            other_path = np.matmul(al.astype(np.float32), rl.astype(np.float32)) > 0
            ok[:, 2] = al & base_rev & room[:, :, None] & ~other_path
            if tabu_length:
                ok &= banned[idx] == 0
            gains = np.where(ok, np.stack([d_add[idx], d_del[idx], d_del[idx] + d_add[idx].transpose(0, 2, 1)], 1),
                             -np.inf)
            gain = gains.reshape(len(idx), -1).max(1)
            tol = 1e-9 * (1.0 + np.abs(cur[idx].sum(1)))  # below rounding of the summed scores
            stop = ~np.isfinite(gain)
            if not tabu_length:
                stop |= gain <= tol
            if sideways:
                stop |= gain < -tol
            live[idx[stop]] = False
            pick = np.where(gains >= (gain - tol)[:, None, None, None], priority[idx], -1.0)
            ks = pick.reshape(len(idx), -1).argmax(1)
            for i, k, halt, tol_i in zip(idx.tolist(), ks.tolist(), stop.tolist(), tol.tolist()):
                if halt:
                    continue
                op, u, j = np.unravel_index(k, (3, v, v))
                if op == 0:
                    a[i, u, j] = True
                    npar[i, j] += 1
                    undo = (1, u, j)  # deleting it again
                    refresh(i, j)
                    src, dst = r[i, :, u].copy(), r[i, j, :].copy()
                    src[u] = dst[j] = True
                    r[i] |= src[:, None] & dst[None, :]
                elif op == 1:
                    a[i, u, j] = False
                    npar[i, j] -= 1
                    undo = (0, u, j)
                    refresh(i, j)
                    r[i] = _closure(a[i])
                else:
                    a[i, u, j], a[i, j, u] = False, True
                    npar[i, j] -= 1
                    npar[i, u] += 1
                    undo = (2, j, u)
                    refresh(i, j)
                    refresh(i, u)
                    r[i] = _closure(a[i])
                if tabu_length:
                    tabu[i].append(undo)
                    banned[(i,) + undo] += 1
                    if len(tabu[i]) > tabu_length:
                        banned[(i,) + tabu[i].popleft()] -= 1
                pbar.update(1)
                total = cur[i].sum()
                if total > best[i] + tol_i:
                    best_a[i], best[i], since_best[i] = a[i], total, 0
                elif tabu_length:
                    since_best[i] += 1
                    if since_best[i] > patience:
                        live[i] = False
    return list(best_a) if tabu_length else list(a)


# ---- trees ------------------------------------------------------------------------------
def mutual_information(counts: Counts, i: int, j: int, given: int | None = None) -> float:
    """Empirical (conditional) mutual information in nats: ``I(X_i; X_j)`` or
    ``I(X_i; X_j | X_given)`` from the counts, as
    ``[sum n_xyz log n_xyz + sum n_z log n_z - (sum n_xz log n_xz + sum n_yz log n_yz)] / n``
    with each sum taken over its sorted counts: tables equal up to a relabelling of the
    states (and of ``i`` with ``j``) give bit-identical values, so a tie between two pairs
    is an exact tie, which the trees break by variable order, not by rounding. Exactly 0
    when the table is the product of its margins (``n_z n_xyz = n_xz n_yz`` in every
    stratum, to 1e-12 relative: exact for integer counts): the pair is independent in the
    sample (e.g. one of them is constant in it)."""
    cols = ([given] if given is not None else []) + [i, j]
    t = counts.table(cols)
    if given is None:
        t = t[None]
    n = t.sum()
    pz = t.sum((1, 2), keepdims=True)
    pxz = t.sum(2, keepdims=True)
    pyz = t.sum(1, keepdims=True)
    outer = pxz * pyz
    if (np.abs(t * pz - outer) <= 1e-12 * outer).all():
        return 0.0

    def xlogx(c: np.ndarray) -> float:
        c = c[c > 0]  # a copy, sorted in place
        c.sort()
        return float((c * np.log(c)).sum())

    return (xlogx(t) + xlogx(pz) - (xlogx(pxz) + xlogx(pyz))) / float(n)


def _max_tree(weights: np.ndarray, nodes: list[int], root: int | None = None) -> list[tuple[int, int]]:
    """The maximum-weight spanning tree over ``nodes`` (Kruskal) of the pairs of positive
    weight, directed away from ``root``. Pairs whose weights agree to 1e-12 of the largest
    weight are tied (equal up to the rounding of their sums; e.g. two parents of a child
    whose tables differ only by a merged state) and taken in the order of ``nodes``
    (lexicographic pairs), so rounding does not pick among them.

    A pair of zero mutual information is independent in the sample: its edge would add no
    likelihood (an edge's log-likelihood gain is ``N`` times its weight; Chow & Liu 1968)
    and only parameters, so it is left out (a forest when some variable, e.g. a constant
    one, is independent of every other — as pgmpy's ``TreeSearch``, whose weight graph has
    no zero-weight edges). ``root=None``: the node of largest total weight to all the
    others (ties: the first in ``nodes``; pgmpy's rule). Every other component is directed
    away from its own node of largest total weight."""
    pairs = [(a_, b_) for a_, b_ in itertools.combinations(nodes, 2) if weights[a_, b_] > 0]
    w = np.array([weights[e] for e in pairs])
    tol = 1e-12 * (float(w.max()) if len(w) else 0.0)
    srt = sorted(range(len(pairs)), key=lambda k: -w[k])
    order, i = [], 0
    while i < len(srt):  # the heaviest remaining pair and every pair within rounding of it, in pair order
        j = i
        while j < len(srt) and w[srt[j]] >= w[srt[i]] - tol:
            j += 1
        order += sorted(srt[i:j])
        i = j
    tree = nx.Graph()
    tree.add_nodes_from(nodes)
    comp = {u: u for u in nodes}  # union-find (Kruskal)

    def find(u: int) -> int:
        while comp[u] != u:
            comp[u] = comp[comp[u]]
            u = comp[u]
        return u

    for k in order:
        a_, b_ = pairs[k]
        ra, rb = find(a_), find(b_)
        if ra != rb:
            comp[ra] = rb
            tree.add_edge(a_, b_)
    total = weights[np.ix_(nodes, nodes)].sum(1)
    rank = {u: k for k, u in enumerate(nodes)}
    roots = [] if root is None else [root]
    for comp in sorted(nx.connected_components(tree), key=lambda c: min(rank[u] for u in c)):
        if root not in comp:  # its node of largest total weight, ties to the first
            roots.append(max(sorted(comp, key=rank.get), key=lambda u: total[rank[u]]))
    return [(p, c) for r in roots for p, c in nx.bfs_edges(tree, r)]


# ---- PC-stable --------------------------------------------------------------------------
def ci_statistic(counts: Counts, x: int, y: int, z: tuple[int, ...], test: str,
                 dof: str = "adjusted") -> tuple[float, int]:
    """``(statistic, degrees of freedom)`` of `ci_test` (same arguments)."""
    t = counts.table(list(z) + [x, y]).reshape(-1, counts.cards[x], counts.cards[y])
    nz = t.sum((1, 2), keepdims=True)
    e = t.sum(2, keepdims=True) * t.sum(1, keepdims=True) / np.where(nz > 0, nz, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        if test == "g2":
            stat = 2.0 * np.where(t > 0, t * np.log(t / e), 0.0).sum()
        else:
            stat = np.where(e > 0, (t - e) ** 2 / e, 0.0).sum()
    if dof == "full":
        return float(stat), max((counts.cards[x] - 1) * (counts.cards[y] - 1) * t.shape[0], 1)
    rx = (t.sum(2) > 0).sum(1)  # states of X seen in each configuration of Z
    ry = (t.sum(1) > 0).sum(1)
    return float(stat), int((np.maximum(rx - 1, 0) * np.maximum(ry - 1, 0)).sum())


def ci_test(counts: Counts, x: int, y: int, z: tuple[int, ...], test: str, dof: str = "adjusted") -> float:
    """p-value of ``X ⟂ Y | Z`` by the G² (likelihood-ratio) or Pearson χ² statistic,
    summed over the configurations of Z (Spirtes et al. 2000, §5.5).

    Args:
      counts: the data's counts; ``x``, ``y`` variable indices; ``z`` the conditioning set.
      test: ``"g2"`` or ``"chi2"``.
      dof: ``"adjusted"``: each configuration of Z contributes ``(r'_x - 1)(r'_y - 1)``
        degrees of freedom, ``r'`` the number of states of X (of Y) that occur in it, and
        configurations that never occur contribute none — the structural zeros of a sparse
        table estimate nothing (Fienberg 1977; as Tetrad's and pgmpy's tests, and pcalg's
        ``adaptDF``); with no degree of freedom left the statistic is 0 and the test cannot
        reject independence (p = 1; pgmpy's p-value is NaN there, which its comparison reads
        as dependent — keeping every edge whose tests run out of data, and the conditioning
        sets growing with them). ``"full"``: ``(r_x - 1)(r_y - 1) q_z`` whatever the data,
        which at small N and large Z makes almost every test pass.

    Returns:
      The p-value (a float)."""
    stat, df = ci_statistic(counts, x, y, z, test, dof)
    if df == 0:
        return 1.0
    from scipy.stats import chi2  # scipy.stats takes a second to import: only PC needs it
    return float(chi2.sf(stat, df))


def pc_stable(counts: Counts, v: int, alpha: float, test: str, max_cond: int | None,
              progress: bool | None = None, dof: str = "adjusted") -> np.ndarray:
    """PC-stable: skeleton (adjacencies frozen per level, so the result does not depend on
    the variable order), v-structures, Meek rules R1-R4, then a DAG in the CPDAG's class."""
    adj = ~np.eye(v, dtype=bool)
    sepset: dict = {}
    level = 0
    with bar(desc="pc", enabled=progress) as pbar:
        while max_cond is None or level <= max_cond:
            frozen = adj.copy()
            if all(frozen[i].sum() - 1 < level for i in range(v)):
                break
            for i, j in itertools.permutations(range(v), 2):
                if not adj[i, j]:
                    continue
                others = [k for k in np.flatnonzero(frozen[i]) if k != j]
                for z in itertools.combinations(others, level):
                    pbar.update(1)
                    if ci_test(counts, i, j, z, test, dof) > alpha:
                        adj[i, j] = adj[j, i] = False
                        sepset[frozenset((i, j))] = set(z)
                        break
            level += 1
    # orientation: d[i, j] & ~d[j, i] is i -> j; both set is undirected
    d = adj.copy()
    for k in range(v):
        nb = np.flatnonzero(adj[k])
        for i, j in itertools.combinations(nb, 2):
            if not adj[i, j] and k not in sepset.get(frozenset((i, j)), set()):
                for u in (i, j):  # u -> k, unless an earlier collider oriented k -> u (keep the edge)
                    if d[u, k]:
                        d[k, u] = False
    _meek(d)
    return _extend(d)


def _meek(d: np.ndarray) -> None:
    """Apply Meek's (1995) rules R1-R4 in place until nothing changes. ``d`` (V, V) bool:
    ``d[i, j] & ~d[j, i]`` is i -> j, both set i - j. R1-R3 complete a CPDAG's orientation
    from its v-structures; R4 is needed when some orientations come from elsewhere (the
    tests' conflicting answers, or knowledge), and with it the rules orient every edge that
    all consistent DAG extensions orient alike (Meek 1995)."""
    v = len(d)
    und = lambda a_, b_: d[a_, b_] and d[b_, a_]  # noqa: E731
    dirc = lambda a_, b_: d[a_, b_] and not d[b_, a_]  # noqa: E731
    adjc = lambda a_, b_: d[a_, b_] or d[b_, a_]  # noqa: E731
    changed = True
    while changed:
        changed = False
        for a_, b_ in itertools.permutations(range(v), 2):
            if not und(a_, b_):
                continue
            # R1: c -> a - b, c not adjacent to b  =>  a -> b
            r1 = any(dirc(c, a_) and not adjc(c, b_) for c in range(v) if c not in (a_, b_))
            # R2: a -> c -> b and a - b  =>  a -> b
            r2 = any(dirc(a_, c) and dirc(c, b_) for c in range(v) if c not in (a_, b_))
            # R3: a - c -> b, a - e -> b, c and e not adjacent  =>  a -> b
            cs = [c for c in range(v) if c not in (a_, b_) and und(a_, c) and dirc(c, b_)]
            r3 = any(not adjc(c, e) for c, e in itertools.combinations(cs, 2))
            # R4: c -> d -> b, a adjacent to c and d, c not adjacent to b  =>  a -> b (else
            # b -> a forces d -> a, then c -> a, a collider c -> a <- b the PDAG lacks)
            r4 = any(dirc(c, e) and dirc(e, b_) and adjc(a_, c) and adjc(a_, e) and not adjc(c, b_)
                     for c in range(v) if c not in (a_, b_) for e in range(v) if e not in (a_, b_, c))
            if r1 or r2 or r3 or r4:
                d[b_, a_] = False
                changed = True


def _extend(d: np.ndarray) -> np.ndarray:
    """A DAG with the PDAG's skeleton and v-structures (Dor & Tarsi 1992): repeatedly remove
    a sink whose undirected neighbours are adjacent to all its other neighbours, orienting
    its undirected edges into it. When none exists (the tests' answers conflict), the rest
    is oriented along a topological order of its directed part."""
    v = len(d)
    out = np.zeros((v, v), dtype=bool)
    alive = set(range(v))
    while alive:
        for x in sorted(alive):
            if any(d[x, y] and not d[y, x] for y in alive):
                continue  # not a sink
            nb = [y for y in alive if y != x and (d[x, y] or d[y, x])]
            und = [y for y in nb if d[x, y] and d[y, x]]
            if all(d[y, w] or d[w, y] for y in und for w in nb if w != y):
                for y in nb:
                    out[y, x] = True
                alive.remove(x)
                break
        else:
            g = nx.DiGraph()
            g.add_nodes_from(alive)
            g.add_edges_from((a_, b_) for a_ in alive for b_ in alive if d[a_, b_] and not d[b_, a_])
            order = list(nx.topological_sort(g)) if nx.is_directed_acyclic_graph(g) else sorted(alive)
            rank = {u: k for k, u in enumerate(order)}
            for a_ in alive:
                for b_ in alive:
                    if (d[a_, b_] or d[b_, a_]) and rank[a_] < rank[b_]:
                        out[a_, b_] = True
            break
    return out


# ---- missing cells --------------------------------------------------------------------------
def completion(net: Any, x: np.ndarray, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A weighted completion of ``x`` under the network ``net`` (its tables): complete rows
    with weight 1; an incomplete row becomes every joint state of its missing cells,
    weighted by its posterior ``p(missing | observed)`` (at most ``ENUMERATE_COMPLETIONS``
    completions), else ``LW_PARTICLES`` likelihood-weighted draws (Fung & Chang 1990).
    Counting the completion gives the expected counts of *any* family at ``net``, which is
    what the structural EM's search needs (Friedman 1997). Returns ``(rows, weights)``."""
    from probgen.ops.bayesian_network import compiled
    params = {f"probs_{v}": net.tables[v] for v in net.variables}
    cnet = compiled(net, params)
    cards = np.asarray(net.cards)
    miss = x < 0
    full = ~miss.any(1)
    rows, weights = [x[full]], [np.ones(int(full.sum()))]
    if full.all():
        return x, weights[0]
    xm = x[~full]
    n_comp = np.prod(np.where(miss[~full], cards[None, :], 1), axis=1)
    small = n_comp <= ENUMERATE_COMPLETIONS
    # exact: group rows by their missing pattern, tile every joint state of the missing cells
    patterns, inv = np.unique(miss[~full][small], axis=0, return_inverse=True)
    xs = xm[small]
    for k, pat in enumerate(patterns):
        r = xs[inv.ravel() == k]
        cols = np.flatnonzero(pat)
        states = np.array(list(itertools.product(*(range(cards[c]) for c in cols))), dtype=np.int64)
        ex = np.repeat(r, len(states), axis=0)
        ex[:, cols] = np.tile(states, (len(r), 1))
        lp = cnet.log_prob_rows(ex).reshape(len(r), len(states))
        lp -= lp.max(1, keepdims=True)
        w = np.exp(lp)
        w /= w.sum(1, keepdims=True)
        rows.append(ex)
        weights.append(w.ravel())
    if (~small).any():
        rows_lw, w_lw = _likelihood_weighting(net, xm[~small], seed)
        rows.append(rows_lw)
        weights.append(w_lw)
    return np.concatenate(rows), np.concatenate(weights)


def _likelihood_weighting(net: Any, x: np.ndarray, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``LW_PARTICLES`` completions per row: missing cells drawn ancestrally, each particle
    weighted by the probability of the row's observed cells given its sampled parents,
    normalised per row."""
    from probgen.random import generator
    g = generator(seed)
    k = LW_PARTICLES
    out = torch.from_numpy(np.repeat(x, k, axis=0))
    logw = torch.zeros(len(out), dtype=torch.float64)
    for j, v in enumerate(net.variables):
        t = net.tables[v]
        idx = tuple(out[:, net.index[p]] for p in net.parents[v])
        p = t[idx] if idx else t.expand(len(out), -1)
        draw = torch.multinomial(p, 1, generator=g).squeeze(1)
        obs = out[:, j] >= 0
        logw += torch.where(obs, torch.log(p.gather(1, out[:, j].clamp_min(0)[:, None]).squeeze(1)),
                            torch.zeros_like(logw))
        out[:, j] = torch.where(obs, out[:, j], draw)
    lw = logw.reshape(-1, k)
    w = torch.softmax(lw, dim=1).reshape(-1)
    return out.numpy(), w.numpy()


# ---- the entry points -------------------------------------------------------------------------
def _edge_list(name: str, edges: Any, index: dict) -> list[tuple[int, int]]:
    if edges is None:
        return []
    if isinstance(edges, nx.DiGraph):
        edges = list(edges.edges())
    out = []
    for e in edges:
        if not (isinstance(e, (tuple, list)) and len(e) == 2):
            raise ValueError(f"{name}: edges are (parent, child) pairs, got {e!r}")
        for u in e:
            if u not in index:
                raise ValueError(f"{name}: unknown variable {u!r} in edge {tuple(e)}; variables: {list(index)}")
        if e[0] == e[1]:
            raise ValueError(f"{name}: a self-loop {tuple(e)} is not an edge of a DAG")
        out.append((index[e[0]], index[e[1]]))
    return out


def _network_edges(net: Any) -> tuple[list[str], set[tuple[str, str]]]:
    if hasattr(net, "parents") and hasattr(net, "variables"):
        return list(net.variables), {(p, v) for v in net.variables for p in net.parents[v]}
    if isinstance(net, nx.DiGraph):
        return list(net.nodes()), set(net.edges())
    raise ValueError(f"expected a BayesianNetwork or a networkx DiGraph, got {type(net).__name__}")


def _skeleton_network(cls: type, data: Any, states: Any) -> Any:
    """A network without edges whose variables and states are the data's: from ``states``
    (``{variable: [states] | k}``, in column order for arrays), else the data's columns
    (their distinct values, sorted) or, for an array, ``X0..`` with ``max + 1`` states."""
    if states is not None:
        if not isinstance(states, dict) or not states:
            raise ValueError("states must be a dict {variable: [state names] or number of states}")
        return cls({v: {"states": s} for v, s in states.items()}, name="learned")
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        data = {str(c): list(data[c]) for c in data.columns}
    if isinstance(data, dict):
        spec = {}
        for c, col in data.items():
            seen = sorted({str(x) if not isinstance(x, float) or not x.is_integer() else str(int(x))
                           for x in col if x is not None and not (isinstance(x, float) and math.isnan(x))})
            if not seen:
                raise ValueError(f"column {c!r} has no observed value; pass states= to learn with a latent variable")
            spec[str(c)] = {"states": seen}
        return cls(spec, name="learned")
    arr = np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"data must be a dict of columns, a DataFrame or an (N, V) array of state indices, "
                         f"got shape {arr.shape}")
    finite = np.where(np.isnan(arr), -1, arr)
    cards = np.maximum(finite.max(0), 0).astype(int) + 1
    return cls({f"X{j}": {"states": int(k)} for j, k in enumerate(cards)}, name="learned")


def _build(cls: type, skel: Any, a: np.ndarray, counts: Counts, pseudo_count: float, name: str) -> Any:
    """The network with DAG ``a`` (over ``skel``'s variables) and tables from the
    (expected) counts plus a symmetric Dirichlet pseudo-count."""
    vs = skel.variables
    spec = {}
    for j, v in enumerate(vs):
        pa = [int(p) for p in np.flatnonzero(a[:, j])]
        c = counts.table(pa + [j]) + pseudo_count
        z = c.sum(-1, keepdims=True)
        table = np.where(z > 0, c / np.where(z > 0, z, 1.0), 1.0 / c.shape[-1])
        spec[v] = {"states": list(skel.states[v]), "parents": [vs[p] for p in pa], "cpt": table}
    return cls(spec, name=name)


def learn_structure(cls: type, data: Any, method: str = "hill-climb", score: str = "bic", *,
                    max_parents: int | None = None, white_list: Any = None, black_list: Any = None,
                    start: Any = None, states: Any = None, seed: int | None = None,
                    **options: Any) -> Any:
    """See `BayesianNetwork.learn_structure`."""
    known = ("ess", "class_variable", "root", "significance_level", "ci_test", "max_cond_vars", "dof",
             "tabu_length", "patience", "max_iter", "pseudo_count", "em_steps", "progress", "restarts")
    check_options("learn_structure", {k: o for k, o in options.items() if k not in known}, known)
    ess = options.get("ess", 10.0)
    pseudo_count = options.get("pseudo_count", 1.0)
    progress = options.get("progress", None)
    if method not in METHODS:
        raise ValueError(f"unknown structure-learning method {method!r}; methods: {', '.join(METHODS)}")
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; scores: {', '.join(SCORES)}")
    if not (isinstance(ess, (int, float)) and ess > 0):
        raise ValueError(f"ess (BDeu's equivalent sample size) must be > 0, got {ess!r}")
    if not (isinstance(pseudo_count, (int, float)) and pseudo_count >= 0):
        raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count!r}")
    if max_parents is not None and (not isinstance(max_parents, int) or max_parents < 0):
        raise ValueError(f"max_parents must be None or an integer >= 0, got {max_parents!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
    mcv = options.get("max_cond_vars")
    if mcv is not None and (isinstance(mcv, bool) or not isinstance(mcv, int) or mcv < 0):
        raise ValueError(f"max_cond_vars must be None or an integer >= 0, got {mcv!r}")
    skel = _skeleton_network(cls, data, states)
    x = skel.check_data(data).numpy()
    vs, v = skel.variables, len(skel.variables)
    index = skel.index
    white = _edge_list("white_list", white_list, index)
    black = _edge_list("black_list", black_list, index)
    start_edges = _edge_list("start", start.structure().edges() if hasattr(start, "parents") else start, index)
    if method not in ("hill-climb", "tabu"):
        given = [n for n, val in (("white_list", white_list), ("black_list", black_list), ("start", start),
                                  ("max_parents", max_parents)) if val is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to the score-based searches (hill-climb, tabu), "
                             f"not to {method!r}")
    if "restarts" in options and method not in ("hill-climb", "tabu"):
        raise ValueError("restarts is an option of method='hill-climb' and method='tabu'")
    for k in ("tabu_length", "patience"):
        if k in options and method not in ("hill-climb", "tabu"):
            raise ValueError(f"{k} is an option of method='hill-climb' and method='tabu'")
    for k in ("significance_level", "ci_test", "max_cond_vars", "dof"):
        if k in options and method != "pc":
            raise ValueError(f"{k} is an option of method='pc'")
    if "class_variable" in options and method != "tan":
        raise ValueError("class_variable is an option of method='tan'")
    if "root" in options and method not in ("chow-liu", "tan"):
        raise ValueError("root is an option of method='chow-liu' and method='tan'")

    if method in ("hill-climb", "tabu"):
        allowed = ~np.eye(v, dtype=bool)
        for u, w in black:
            allowed[u, w] = False
        required = np.zeros((v, v), dtype=bool)
        for u, w in white:
            if not allowed[u, w]:
                raise ValueError(f"edge {(vs[u], vs[w])} is both white- and black-listed")
            required[u, w] = True
        a0 = np.zeros((v, v), dtype=bool)
        for u, w in start_edges:
            if not allowed[u, w]:
                raise ValueError(f"the start graph has the black-listed edge {(vs[u], vs[w])}")
            a0[u, w] = True
        a0 |= required
        if not nx.is_directed_acyclic_graph(nx.DiGraph([(vs[u], vs[w]) for u, w in zip(*np.nonzero(a0))])):
            raise ValueError("the start graph with the white-listed edges has a cycle")
        maxp = v if max_parents is None else max_parents
        if (a0.sum(0) > maxp).any():
            raise ValueError(f"the start graph (with the white list) gives a variable more than max_parents={maxp} parents")
        kw = dict(allowed=allowed, required=required, max_parents=maxp, max_iter=options.get("max_iter"),
                  progress=progress, desc=method)
        # both searches keep a tabu list; hill climbing takes only improving and sideways
        # (equal-score) moves, at most ``patience`` in a row without a better graph
        tl, pat = options.get("tabu_length", 10), options.get("patience", 10)
        if not (isinstance(tl, int) and tl > 0 and isinstance(pat, int) and pat >= 0):
            raise ValueError(f"tabu_length must be an integer > 0 and patience >= 0, got {tl!r}, {pat!r}")
        kw.update(tabu_length=tl, patience=pat, sideways=method == "hill-climb")

        restarts = options.get("restarts", 8)
        if not (isinstance(restarts, int) and restarts >= 1):
            raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
        seeds = np.random.default_rng(seed).integers(0, 2 ** 63, size=restarts)

        def run(counts: Counts, a_start: np.ndarray) -> np.ndarray:
            # one search per tie-breaking seed, sharing the cache of local scores; the graph
            # of highest score wins (only the score decides: nothing else is looked at)
            # (score-equivalent graphs tie up to rounding: the earliest restart keeps them, so
            # neither summation order nor float noise picks among equal scores)
            scorer = Scorer(counts, score, ess)
            best, best_s = None, -np.inf
            for a in search(scorer, v, start=a_start, seeds=[int(s_) for s_ in seeds], **kw):
                total = sum(scorer(j, np.flatnonzero(a[:, j])) for j in range(v))
                if best is None or total > best_s + 1e-9 * (1.0 + abs(best_s)):
                    best, best_s = a, total
            return best

        if not (x < 0).any():
            counts = Counts(x, skel.cards)
            a = run(counts, a0)
            return _build(cls, skel, a, counts, pseudo_count, "learned")
        return _structural_em(cls, skel, x, a0, run, pseudo_count, options.get("em_steps", 10), seed, progress)

    if (x < 0).any():
        raise ValueError(f"method {method!r} needs complete data; with missing cells use method='hill-climb' "
                         "or 'tabu' (structural EM)")
    counts = Counts(x, skel.cards)
    a = np.zeros((v, v), dtype=bool)
    if method == "pc":
        alpha = options.get("significance_level", 0.01)
        test = options.get("ci_test", "g2")
        if not (isinstance(alpha, float) and 0 < alpha < 1):
            raise ValueError(f"significance_level must be a float in (0, 1), got {alpha!r}")
        if test not in CI_TESTS:
            raise ValueError(f"unknown ci_test {test!r}; tests: {', '.join(CI_TESTS)}")
        dof = options.get("dof", "adjusted")
        if dof not in DOF_RULES:
            raise ValueError(f"unknown dof rule {dof!r}; rules: {', '.join(DOF_RULES)}")
        a = pc_stable(counts, v, alpha, test, options.get("max_cond_vars"), progress, dof)
    elif method == "chow-liu":
        root = options.get("root")
        if root is not None and root not in index:
            raise ValueError(f"unknown root {root!r}; variables: {vs}")
        w = np.zeros((v, v))
        for i, j in itertools.combinations(range(v), 2):
            w[i, j] = w[j, i] = mutual_information(counts, i, j)
        for p, c in _max_tree(w, list(range(v)), None if root is None else index[root]):
            a[p, c] = True
    else:  # tan
        cv = options.get("class_variable")
        if cv is None:
            raise ValueError("method='tan' needs class_variable= (the variable every attribute depends on)")
        if cv not in index:
            raise ValueError(f"unknown class_variable {cv!r}; variables: {vs}")
        c = index[cv]
        attrs = [j for j in range(v) if j != c]
        if not attrs:
            raise ValueError("method='tan' needs at least one attribute besides the class variable")
        root = options.get("root")
        if root is not None and (root not in index or root == cv):
            raise ValueError(f"root must be an attribute (not the class), got {root!r}")
        w = np.zeros((v, v))
        for i, j in itertools.combinations(attrs, 2):
            w[i, j] = w[j, i] = mutual_information(counts, i, j, given=c)
        for p, ch in _max_tree(w, attrs, None if root is None else index[root]):
            a[p, ch] = True
        a[c, attrs] = True
    return _build(cls, skel, a, counts, pseudo_count, "learned")


def _structural_em(cls: type, skel: Any, x: np.ndarray, a0: np.ndarray, run, pseudo_count: float,
                   em_steps: Any, seed: int | None, progress: bool | None) -> Any:
    """Structural EM (Friedman 1997): start from a search on the complete rows (the start
    graph when there are none), then alternate (E) the weighted completion of the rows at
    the current network — the expected counts of every family — and (M) a search from the
    current graph on the expected-count scores, until the graph stops changing."""
    if not (isinstance(em_steps, int) and em_steps >= 1):
        raise ValueError(f"em_steps must be an integer >= 1, got {em_steps!r}")
    n = len(x)
    full = (x >= 0).all(1)
    a = run(Counts(x[full], skel.cards), a0) if full.sum() >= 2 else a0.copy()
    # tables for the first E-step: available-case counts (each family over its observed rows)
    net = _available_case(cls, skel, x, a, max(pseudo_count, 1.0))
    for step in bar(range(em_steps), desc="structural em", enabled=progress):
        rows, w = _complete(skel, net, x, None if seed is None else seed + step)
        counts = Counts(rows, skel.cards, w, n=n)
        new = run(counts, a)
        net = _build(cls, skel, new, counts, max(pseudo_count, 1e-9), "learned")
        if (new == a).all():
            break
        a = new
    rows, w = _complete(skel, net, x, seed)
    return _build(cls, skel, a, Counts(rows, skel.cards, w, n=n), pseudo_count, "learned")


def _complete(skel: Any, net: Any, x: np.ndarray, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """`completion` of ``x`` (columns in ``skel``'s order) at ``net``, whose columns
    are in its own topological order."""
    perm = [skel.index[v] for v in net.variables]
    rows, w = completion(net, x[:, perm], seed)
    return rows[:, np.argsort(perm)], w


def _available_case(cls: type, skel: Any, x: np.ndarray, a: np.ndarray, pseudo_count: float) -> Any:
    vs = skel.variables
    spec = {}
    for j, v in enumerate(vs):
        pa = [int(p) for p in np.flatnonzero(a[:, j])]
        cols = pa + [j]
        ok = (x[:, cols] >= 0).all(1)
        c = Counts(x[ok][:, cols], [skel.cards[k] for k in cols]).table(range(len(cols))) + pseudo_count
        spec[v] = {"states": list(skel.states[v]), "parents": [vs[p] for p in pa],
                   "cpt": c / c.sum(-1, keepdims=True)}
    return cls(spec, name="learned")


# ---- metrics -------------------------------------------------------------------------------------
def score(model: Any, data: Any, score: str = "bic", ess: float = 10.0) -> float:
    """The score of ``model``'s DAG on ``data`` (its data forms): the sum of its families'
    local scores (`local_score`). With missing cells the counts are the expected
    counts at the model's own tables (the weighted completion of `completion`)."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; scores: {', '.join(SCORES)}")
    if not (isinstance(ess, (int, float)) and ess > 0):
        raise ValueError(f"ess must be > 0, got {ess!r}")
    x = model.check_data(data).numpy()
    if (x < 0).any():
        rows, w = completion(model, x)
        counts = Counts(rows, model.cards, w, n=len(x))
    else:
        counts = Counts(x, model.cards)
    return float(sum(local_score(counts, j, tuple(model.index[p] for p in model.parents[v]), score, ess)
                     for j, v in enumerate(model.variables)))


def _pair(true: Any, learned: Any) -> tuple[set, set]:
    vt, et = _network_edges(true)
    vl, el = _network_edges(learned)
    if set(vt) != set(vl):
        raise ValueError(f"the two networks have different variables: only in the first "
                         f"{sorted(set(vt) - set(vl))}, only in the second {sorted(set(vl) - set(vt))}")
    return et, el


def shd(true: Any, learned: Any) -> int:
    """Structural Hamming distance: pairs adjacent in one graph only (an addition or a
    deletion) plus pairs adjacent in both with opposite directions (a reversal counts 1, as
    pgmpy's ``SHD``; Tsamardinos, Brown & Aliferis 2006). Networks or ``nx.DiGraph``."""
    et, el = _pair(true, learned)
    st = {frozenset(e) for e in et}
    sl = {frozenset(e) for e in el}
    reversed_ = sum(1 for e in et if frozenset(e) in sl and e not in el)
    return len(st ^ sl) + reversed_


def edge_scores(true: Any, learned: Any, directed: bool = True) -> dict[str, float]:
    """Precision, recall and F1 of the learned edges against the true ones (directed: an
    edge counts only with its direction; ``directed=False``: skeletons). ``{"precision",
    "recall", "f1", "tp", "fp", "fn"}``; precision (recall) is 1 when nothing was learned
    (nothing is true)."""
    et, el = _pair(true, learned)
    if not directed:
        et, el = {frozenset(e) for e in et}, {frozenset(e) for e in el}
    tp = len(et & el)
    fp, fn = len(el - et), len(et - el)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn}


__all__ = ["learn_structure", "score", "shd", "edge_scores", "local_score", "Counts", "METHODS", "SCORES"]
