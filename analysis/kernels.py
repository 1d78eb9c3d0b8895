"""Compiled loops of the correlation analysis (numba), each replacing a pair enumeration or a
vectorised merge sort by a sort and one pass.

Every kernel counts integer pairs or sums floats in a fixed order, so the statistics built
on them equal those of the vectorised numpy code they replaced, which enumerated or merged
the same pairs (``tests/test_analysis_speed.py`` compares the two on a 10,000-model table).

- :func:`group_concordance`: per group, the pairs tied in x, in y, in both, and the
  discordant pairs (inversions of y in (x, y) order, counted by a merge sort): Kendall's
  τ of every group in O(n log n).
- :func:`pair_sign_tables`: counts of ordered pairs of models by (key_i, key_j, sign Δx,
  sign Δy), the tables the conditional mutual information is read from, for several
  keyings in one sweep in x order with a Fenwick tree over the y ranks that holds one count
  per bin (O(n·B·log n) for B bins in all, instead of n² pair visits).
- :func:`environment_pairs` / :func:`environment_sums`: the coupled environments of the
  robust sign-error (every model of one cell against every model of another), their pairs
  laid out once per gap, then the weighted sign-error sums of one measure in one pass.

Numba compiles each kernel at its first call and caches the machine code beside this
file (``cache=True``), so later processes start at once. The kernels release the GIL, so
independent calls run on ``numba.get_num_threads()`` threads (:func:`thread_map`; set
``NUMBA_NUM_THREADS`` to change it); each sums in its own fixed order, so the results do
not depend on the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit

TREE_BYTES = 256e6  # memory of the Fenwick tree of one sweep of pair_sign_tables (bins are chunked beyond)


def thread_map(fn, items) -> list:
    """``[fn(x) for x in items]`` on ``numba.get_num_threads()`` threads (in order)."""
    items = list(items)
    n = min(numba.get_num_threads(), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fn, items))


@njit(cache=True, nogil=True)
def _sort_count_inversions(a, tmp, lo, hi):
    """Sort ``a[lo:hi]`` in place (bottom-up merge sort) and return its number of
    inversions, the pairs p < q with a[p] > a[q]."""
    inv = 0
    width = 1
    n = hi - lo
    while width < n:
        i = lo
        while i < hi:
            mid = min(i + width, hi)
            end = min(i + 2 * width, hi)
            p, q, k = i, mid, i
            while p < mid and q < end:
                if a[q] < a[p]:
                    tmp[k] = a[q]
                    inv += mid - p
                    q += 1
                else:
                    tmp[k] = a[p]
                    p += 1
                k += 1
            while p < mid:
                tmp[k] = a[p]
                p += 1
                k += 1
            while q < end:
                tmp[k] = a[q]
                q += 1
                k += 1
            i += 2 * width
        for k in range(lo, hi):
            a[k] = tmp[k]
        width *= 2
    return inv


@njit(cache=True, nogil=True)
def _run_end(a, start, stop):
    """End of the run of values equal to ``a[start]`` in ``a[start:stop]``."""
    q = start + 1
    while q < stop and a[q] == a[start]:
        q += 1
    return q


@njit(cache=True, nogil=True)
def _tied_pairs(a, lo, hi):
    """Σ t(t−1)/2 over the runs of equal values of the sorted ``a[lo:hi]``."""
    s = 0
    r = lo
    while r < hi:
        q = _run_end(a, r, hi)
        s += (q - r) * (q - r - 1) // 2
        r = q
    return s


@njit(cache=True, nogil=True)
def group_concordance(group, rx, ry, n_groups):
    """Per group: (models, pairs tied in x, tied in y, tied in both, discordant pairs).

    ``group``, ``rx`` and ``ry`` (dense ranks) are sorted by (group, rx, ry). Discordant
    pairs are the inversions of ry in that order: a pair tied in x is in y order, so it is
    never counted.
    """
    n = len(group)
    size = np.zeros(n_groups, np.int64)
    x_ties = np.zeros(n_groups, np.int64)
    y_ties = np.zeros(n_groups, np.int64)
    xy_ties = np.zeros(n_groups, np.int64)
    dis = np.zeros(n_groups, np.int64)
    buf = ry.copy()
    tmp = np.empty(n, ry.dtype)
    s = 0
    while s < n:
        e = _run_end(group, s, n)
        g = group[s]
        size[g] += e - s
        r = s
        while r < e:  # runs of equal x, and of equal (x, y) inside them
            q = _run_end(rx, r, e)
            x_ties[g] += (q - r) * (q - r - 1) // 2
            xy_ties[g] += _tied_pairs(ry, r, q)
            r = q
        dis[g] += _sort_count_inversions(buf, tmp, s, e)
        y_ties[g] += _tied_pairs(buf, s, e)  # buf[s:e] is now sorted by y
        s = e
    return size, x_ties, y_ties, xy_ties, dis


@njit(cache=True, nogil=True)
def stable_group_order(group, n_groups):
    """The permutation that sorts ``group`` stably (a counting sort, O(n + n_groups))."""
    n = len(group)
    start = np.zeros(n_groups + 1, np.int64)
    for i in range(n):
        start[group[i] + 1] += 1
    for g in range(n_groups):
        start[g + 1] += start[g]
    out = np.empty(n, np.int64)
    for i in range(n):
        g = group[i]
        out[start[g]] = i
        start[g] += 1
    return out


@njit(cache=True, nogil=True)
def _pair_sign_sweep(keys, lo, hi, tofs, rx, ry, R, b0, b1, T):
    """One sweep in (x, y) order for several keyings at once.

    ``keys[i, s]`` is model i's bin under keying s, already offset into one shared bin
    range (keying s owns bins lo[s]..hi[s]). Adds to keying s's table (flat in ``T`` from
    ``tofs[s]``, laid out [a, sx, sy, b] with a, b its own bins) the ordered pairs (i, j)
    with x_i ≥ x_j (sx index 2 for x_i > x_j, 1 for a tie) whose bin b_j lies in [b0, b1).
    A Fenwick tree over the y ranks holds one count per bin of [b0, b1).
    """
    n, S = keys.shape
    m = b1 - b0
    tree = np.zeros((R + 1, m), np.int32)
    exact = np.zeros((R, m), np.int32)       # models seen at each y rank, per bin
    total = np.zeros(m, np.int64)
    less = np.zeros(m, np.int64)
    below = np.zeros(m, np.int64)
    run = np.zeros(m, np.int64)
    p = 0
    while p < n:
        q = _run_end(rx, p, n)
        for i in range(p, q):  # against every model with a smaller x
            r = ry[i]
            less[:] = 0
            j = r
            while j > 0:
                for b in range(m):
                    less[b] += tree[j, b]
                j -= j & (-j)
            for s in range(S):
                u0, u1 = max(lo[s], b0), min(hi[s], b1)
                k = hi[s] - lo[s]
                base = tofs[s] + (keys[i, s] - lo[s]) * 9 * k - lo[s]
                for b in range(u0, u1):
                    eq = exact[r, b - b0]
                    lb = less[b - b0]
                    T[base + 8 * k + b] += lb                               # (+, +)
                    T[base + 7 * k + b] += eq                               # (+, 0)
                    T[base + 6 * k + b] += total[b - b0] - lb - eq          # (+, −)
        if q - p > 1:  # pairs tied in x: by y, in runs of equal y
            below[:] = 0
            t = p
            while t < q:
                e = _run_end(ry, t, q)
                run[:] = 0
                for i in range(t, e):
                    for s in range(S):
                        c = keys[i, s]
                        if b0 <= c < b1:
                            run[c - b0] += 1
                for i in range(t, e):
                    for s in range(S):
                        u0, u1 = max(lo[s], b0), min(hi[s], b1)
                        k = hi[s] - lo[s]
                        a = keys[i, s]
                        base = tofs[s] + (a - lo[s]) * 9 * k - lo[s]
                        for b in range(u0, u1):
                            T[base + 5 * k + b] += below[b - b0]               # (0, +)
                            T[base + 4 * k + b] += run[b - b0]                 # (0, 0)
                        if b0 <= a < b1:
                            T[base + 4 * k + a] -= 1                           # not with itself
                for b in range(m):
                    below[b] += run[b]
                t = e
        for i in range(p, q):
            for s in range(S):
                c = keys[i, s] - b0
                if 0 <= c < m:
                    j = ry[i] + 1
                    while j <= R:
                        tree[j, c] += 1
                        j += j & (-j)
                    exact[ry[i], c] += 1
                    total[c] += 1
        p = q


def pair_sign_tables(keys, n_keys, rx, ry, by_xy=None) -> list[np.ndarray]:
    """For each keying s (column ``keys[:, s]`` with ``n_keys[s]`` bins), the table
    ``(K, K, 3, 3)`` of ordered pairs (i, j), i ≠ j:
    [key_i, key_j, sign(x_i − x_j) + 1, sign(y_i − y_j) + 1].

    ``rx`` and ``ry`` are dense ranks; ``by_xy``, the order of the rows by (rx, ry), may
    be passed when it is known. All keyings are counted in one sweep (the bins are split
    into chunks when the Fenwick tree would exceed ``TREE_BYTES``).
    """
    keys = np.asarray(keys, np.int64).reshape(len(rx), -1)
    sizes = np.asarray(n_keys, np.int64).reshape(-1)
    rx = np.asarray(rx, np.int64)
    ry = np.asarray(ry, np.int64)
    order = np.lexsort((ry, rx)) if by_xy is None else by_xy
    hi = np.cumsum(sizes)
    lo = hi - sizes
    tofs = np.concatenate([[0], np.cumsum(sizes * sizes * 9)])
    keys = keys[order] + lo
    rx, ry = rx[order], ry[order]
    R = int(ry.max()) + 1 if len(ry) else 1
    M = int(hi[-1]) if len(hi) else 0
    T = np.zeros(int(tofs[-1]), np.int64)
    # bins in chunks: each within the tree's memory, at least one per thread (chunks write
    # disjoint entries of T, so they run at once)
    chunk = max(1, min(int(TREE_BYTES // (8 * (R + 1))), -(-M // numba.get_num_threads())))
    thread_map(lambda b0: _pair_sign_sweep(keys, lo, hi, tofs[:-1], rx, ry, R, b0, min(M, b0 + chunk), T),
               range(0, M, chunk))
    out = []
    for s, K in enumerate(sizes):
        t = T[tofs[s]:tofs[s + 1]].reshape(K, 3, 3, K).transpose(0, 3, 1, 2)  # [a, b, sx, sy]
        mirror = t.transpose(1, 0, 2, 3).copy()   # [b, a, sx, sy] seen from a
        t[:, :, 0, :] = mirror[:, :, 2, ::-1]     # (i, j) with x_i < x_j is (j, i) with x_j > x_i
        t[:, :, 1, 0] = mirror[:, :, 1, 2]
        out.append(np.ascontiguousarray(t))
    return out


@njit(cache=True, nogil=True)
def environment_pairs(group, code, gap, n_test):
    """The coupled environments of one axis, rows sorted by (group, code).

    An environment is a pair of cells of one group (codes c1 < c2); its pairs are every
    (i, j), i in c1, j in c2, in row order. Returns ``(first_i, end_i, first_j, end_j,
    offset)`` per environment (row ranges in the sorted order, and where its pairs start)
    and, per pair, ``g_i − g_j`` and min(n_test_i, n_test_j).
    """
    n = len(group)
    # cells: runs of equal (group, code)
    n_cells = 0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1] or code[i] != code[i - 1]:
            n_cells += 1
    cs = np.empty(n_cells + 1, np.int64)
    cg = np.empty(n_cells, np.int64)
    k = 0
    for i in range(n):
        if i == 0 or group[i] != group[i - 1] or code[i] != code[i - 1]:
            cs[k] = i
            cg[k] = group[i]
            k += 1
    cs[n_cells] = n
    n_env = 0
    n_pairs = 0
    for c1 in range(n_cells):
        c2 = c1 + 1
        while c2 < n_cells and cg[c2] == cg[c1]:
            n_env += 1
            n_pairs += (cs[c1 + 1] - cs[c1]) * (cs[c2 + 1] - cs[c2])
            c2 += 1
    fi = np.empty(n_env, np.int64)
    ei = np.empty(n_env, np.int64)
    fj = np.empty(n_env, np.int64)
    ej = np.empty(n_env, np.int64)
    off = np.empty(n_env + 1, np.int64)
    dg = np.empty(n_pairs, np.float64)
    nt = np.empty(n_pairs, np.float64)
    e = 0
    t = 0
    for c1 in range(n_cells):
        c2 = c1 + 1
        while c2 < n_cells and cg[c2] == cg[c1]:
            fi[e], ei[e], fj[e], ej[e], off[e] = cs[c1], cs[c1 + 1], cs[c2], cs[c2 + 1], t
            for i in range(cs[c1], cs[c1 + 1]):
                for j in range(cs[c2], cs[c2 + 1]):
                    dg[t] = gap[i] - gap[j]
                    nt[t] = min(n_test[i], n_test[j])
                    t += 1
            e += 1
            c2 += 1
    off[n_env] = t
    return fi, ei, fj, ej, off, dg, nt


@njit(cache=True, nogil=True)
def environment_sums(x, gap, w, weighted, fi, ei, fj, ej, off, sw, sw2, swe, weight_sums):
    """Per environment: Σw·e over its pairs, in pair order, into ``swe``, with the sign-error
    e = (1 − sign(x_i − x_j)·sign(g_i − g_j)) / 2 (w = 1 when not ``weighted``), and w = 0
    where x is NaN. Σw and Σw² go into ``sw`` and ``sw2`` when ``weight_sums`` is set, or
    else for the environments where x has a NaN only (the others keep the sums over all
    their pairs, computed once per gap)."""
    for e in range(len(fi)):
        nan = weight_sums
        for i in range(fi[e], ei[e]):
            nan |= np.isnan(x[i])
        for j in range(fj[e], ej[e]):
            nan |= np.isnan(x[j])
        t = off[e]
        a = 0.0
        a2 = 0.0
        ae = 0.0
        for i in range(fi[e], ei[e]):
            xi = x[i]
            gi = gap[i]
            for j in range(fj[e], ej[e]):
                wt = w[t] if weighted else 1.0
                t += 1
                xj = x[j]
                if nan and (np.isnan(xi) or np.isnan(xj)):
                    wt = 0.0
                d = xi - xj
                sx = np.float64(d > 0.0) - np.float64(d < 0.0)  # 0 for a tie or NaN, as sign(nan_to_num(d))
                dgap = gi - gap[j]
                sg = np.float64(dgap > 0.0) - np.float64(dgap < 0.0)
                ae += wt * ((1.0 - sx * sg) / 2.0)
                if nan:
                    a += wt
                    a2 += wt * wt
        swe[e] = ae
        if nan:
            sw[e] = a
            sw2[e] = a2
