# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled kernels of the Gamma-GWR network (float32 buffers, no Python objects in the loops).

Thin typed functions over preallocated buffers owned by :class:`clifer_edge.memory.gwr.GWRNetwork`,
which decides what to call; the algorithm is documented step by step in
:mod:`clifer_edge.memory.reference` and the two must agree. Buffers (``cap`` = capacity):

- ``W``        float32 [cap, depth, d]  node weights, level 0 = prototype, 1..K = context
- ``hab``      float32 [cap]            habituation counters
- ``hist``     float32 [cap, Lcap]      label histograms (first ``n_labels`` columns used)
- ``nbr``      int32   [cap, D]         neighbour lists (first ``deg[i]`` slots used)
- ``stamp``    int64   [cap, D]         clock value of each edge's last refresh
- ``syn``      int32   [cap, T]         temporal successors (first ``syn_deg[i]`` slots used)
- ``syn_cnt``  float32 [cap, T]         transition counts

Inputs are validated by the Python class: every index is in range, every buffer C-contiguous.
"""

from libc.math cimport exp, sqrt

import numpy as np


cdef extern from *:
    """
    /* Squared Euclidean distances from one vector to many rows, the hot loop of the memory.
       Eight independent float accumulators give the compiler lanes to vectorise without
       reassociating any sum, so every build (SSE2, AVX2, NEON) returns bit-identical results. On x86-64 with glibc an AVX2 clone is compiled next to the
       portable baseline and picked at load time (no -march=native needed). */
    #if defined(__x86_64__) && defined(__GLIBC__) && !defined(CLIFER_NO_TARGET_CLONES) \
        && ((defined(__clang__) && __clang_major__ >= 14) \
            || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 6))
    #define CLIFER_CLONES __attribute__((target_clones("avx2", "default")))
    #else
    #define CLIFER_CLONES
    #endif

    static inline float clifer_sq_distance(const float *a, const float *b, Py_ssize_t d) {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        Py_ssize_t j = 0;
        for (; j + 8 <= d; j += 8) {
            float t0 = a[j] - b[j], t1 = a[j + 1] - b[j + 1];
            float t2 = a[j + 2] - b[j + 2], t3 = a[j + 3] - b[j + 3];
            float t4 = a[j + 4] - b[j + 4], t5 = a[j + 5] - b[j + 5];
            float t6 = a[j + 6] - b[j + 6], t7 = a[j + 7] - b[j + 7];
            s0 += t0 * t0;
            s1 += t1 * t1;
            s2 += t2 * t2;
            s3 += t3 * t3;
            s4 += t4 * t4;
            s5 += t5 * t5;
            s6 += t6 * t6;
            s7 += t7 * t7;
        }
        for (; j < d; ++j) {
            float t = a[j] - b[j];
            s0 += t * t;
        }
        return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
    }

    CLIFER_CLONES
    static void clifer_sq_distances(const float *x, const float *W, Py_ssize_t n_rows,
                                    Py_ssize_t stride, Py_ssize_t d, float *out) {
        for (Py_ssize_t i = 0; i < n_rows; ++i) {
            out[i] = clifer_sq_distance(x, W + i * stride, d);
        }
    }
    """
    void clifer_sq_distances(const float *x, const float *W, Py_ssize_t n_rows,
                             Py_ssize_t stride, Py_ssize_t d, float *out) noexcept nogil
    float clifer_sq_distance(const float *a, const float *b, Py_ssize_t d) noexcept nogil


cdef void sq_distances(const float* x, const float* W, Py_ssize_t n_rows, Py_ssize_t stride,
                       Py_ssize_t d, float* out) noexcept nogil:
    """out[i] = ||x - W[i * stride : i * stride + d]||^2 for i < n_rows (see the C above)."""
    clifer_sq_distances(x, W, n_rows, stride, d, out)


cdef void disconnect(int i, int j, int[:, ::1] nbr, long long[:, ::1] stamp,
                     int[::1] deg) noexcept nogil:
    """Remove edge i-j from both lists (swap-with-last; slot order carries no meaning)."""
    cdef int side, u, v, p, last
    for side in range(2):
        u = i if side == 0 else j
        v = j if side == 0 else i
        last = deg[u] - 1
        for p in range(deg[u]):
            if nbr[u, p] == v:
                nbr[u, p] = nbr[u, last]
                stamp[u, p] = stamp[u, last]
                nbr[u, last] = -1
                deg[u] = last
                break


cdef void connect(int i, int j, long long clock, int[:, ::1] nbr, long long[:, ::1] stamp,
                  int[::1] deg) noexcept nogil:
    """Create or refresh edge i-j at ``clock``; a full list first drops its oldest edge
    (smallest stamp, then smallest neighbour index)."""
    cdef int p, side, u, best, width = nbr.shape[1]
    cdef long long best_stamp
    for p in range(deg[i]):
        if nbr[i, p] == j:
            stamp[i, p] = clock
            for p in range(deg[j]):
                if nbr[j, p] == i:
                    stamp[j, p] = clock
                    break
            return
    for side in range(2):
        u = i if side == 0 else j
        if deg[u] >= width:
            best = 0
            for p in range(1, deg[u]):
                if stamp[u, p] < stamp[u, best] or (
                    stamp[u, p] == stamp[u, best] and nbr[u, p] < nbr[u, best]
                ):
                    best = p
            disconnect(u, nbr[u, best], nbr, stamp, deg)
    nbr[i, deg[i]] = j
    stamp[i, deg[i]] = clock
    deg[i] += 1
    nbr[j, deg[j]] = i
    stamp[j, deg[j]] = clock
    deg[j] += 1


cdef void count_transition(int previous, int current, int[:, ::1] syn, float[:, ::1] syn_cnt,
                           int[::1] syn_deg) noexcept nogil:
    """Temporal synapse previous -> current; a full node replaces its weakest (then lowest id)."""
    cdef int p, weakest, width = syn.shape[1]
    if previous < 0 or previous == current:
        return
    for p in range(syn_deg[previous]):
        if syn[previous, p] == current:
            syn_cnt[previous, p] += 1.0
            return
    if syn_deg[previous] < width:
        p = syn_deg[previous]
        syn_deg[previous] += 1
    else:
        weakest = 0
        for p in range(1, width):
            if syn_cnt[previous, p] < syn_cnt[previous, weakest] or (
                syn_cnt[previous, p] == syn_cnt[previous, weakest]
                and syn[previous, p] < syn[previous, weakest]
            ):
                weakest = p
        p = weakest
    syn[previous, p] = current
    syn_cnt[previous, p] = 1.0


cdef void remove_old_edges(Py_ssize_t n_nodes, long long clock, long long max_age,
                           int[:, ::1] nbr, long long[:, ::1] stamp, int[::1] deg) noexcept nogil:
    """Drop every edge with ``clock - stamp > max_age`` (both ends share the stamp)."""
    cdef Py_ssize_t i
    cdef int p
    for i in range(n_nodes):
        p = 0
        while p < deg[i]:
            if clock - stamp[i, p] > max_age:
                deg[i] -= 1
                nbr[i, p] = nbr[i, deg[i]]
                stamp[i, p] = stamp[i, deg[i]]
                nbr[i, deg[i]] = -1
            else:
                p += 1


cdef inline void _habituate(float[::1] hab, int node, double tau, double kappa) noexcept nogil:
    cdef double h = hab[node]
    hab[node] = <float>(h + tau * kappa * (1.0 - h) - tau)


cdef inline void _move(float[:, :, ::1] W, float[:, ::1] g, int node, double step) noexcept nogil:
    """w <- w + step * (g - w) over all context levels, in double, rounded to float32."""
    cdef Py_ssize_t k, j
    cdef double w
    for k in range(W.shape[1]):
        for j in range(W.shape[2]):
            w = W[node, k, j]
            W[node, k, j] = <float>(w + step * (<double>g[k, j] - w))


cdef inline int _argmax(float[:, ::1] hist, int node, int n_labels) noexcept nogil:
    cdef int l, best = 0
    for l in range(1, n_labels):
        if hist[node, l] > hist[node, best]:
            best = l
    return best


cdef inline void _new_node(float[:, :, ::1] W, float[::1] hab, float[:, ::1] hist,
                           int[:, ::1] nbr, int[::1] deg, int[::1] syn_deg, float[:, ::1] g,
                           int node, int y, double a_inc) noexcept nogil:
    """Fresh node ``node`` with weights g, habituation 1 and a_inc for label y."""
    cdef Py_ssize_t k, j
    for k in range(W.shape[1]):
        for j in range(W.shape[2]):
            W[node, k, j] = g[k, j]
    hab[node] = 1.0
    for j in range(hist.shape[1]):
        hist[node, j] = 0.0
    hist[node, y] = <float>a_inc
    for j in range(nbr.shape[1]):
        nbr[node, j] = -1
    deg[node] = 0
    syn_deg[node] = 0

cdef inline void _copy_node(float[:, :, ::1] W, int node, float[:, ::1] out) noexcept nogil:
    """out <- W[node] (all levels)."""
    cdef Py_ssize_t k, j
    for k in range(W.shape[1]):
        for j in range(W.shape[2]):
            out[k, j] = W[node, k, j]


cdef inline bint _before(double dist, int node, double other, int other_node) noexcept nogil:
    """(dist, node) < (other, other_node): smaller distance first, ties to the lower index."""
    return dist < other or (dist == other and node < other_node)


cdef double _two_best(float[:, :, ::1] W, float[:, ::1] g, long long n_nodes, Py_ssize_t levels,
                      const double[::1] alphas, float[:, ::1] scratch, int* b_out,
                      int* s_out) noexcept nogil:
    """BMU and second BMU of the context g: distance sum_k alpha_k ||g_k - w_k||, k < levels.

    IN:  W [cap, depth, d], g [depth, d], n_nodes >= 2, levels, alphas [depth]
    OUT: *b_out, *s_out (ties -> lower index); returns the BMU's distance;
         scratch[0, :n_nodes] (squared prototype distances)
    The context levels are only computed for nodes whose prototype term alone does not already
    exceed the second-best distance, which cannot change the result (every term is >= 0).
    """
    cdef Py_ssize_t d = W.shape[2], depth = W.shape[1], k
    cdef int node, first = 0, b = -1, s = -1
    cdef long long step
    cdef double dist, best = 1e300, second = 1e300
    cdef float sq
    sq_distances(&g[0, 0], &W[0, 0, 0], n_nodes, depth * d, d, &scratch[0, 0])
    for node in range(1, n_nodes):  # the prototype-nearest node gives tight bounds early
        if scratch[0, node] < scratch[0, first]:
            first = node
    for step in range(n_nodes + 1):
        if step == 0:
            node = first
        elif step - 1 == first:
            continue
        else:
            node = step - 1
        dist = alphas[0] * sqrt(<double>scratch[0, node])
        if dist > second:
            continue
        for k in range(1, levels):
            sq = clifer_sq_distance(&g[k, 0], &W[node, k, 0], d)  # inlined: no call per node
            dist += alphas[k] * sqrt(<double>sq)
        if _before(dist, node, best, b):
            second = best
            s = b
            best = dist
            b = node
        elif _before(dist, node, second, s):
            second = dist
            s = node
    b_out[0] = b
    s_out[0] = s
    return best


def nearest(const float[:, :, ::1] W, Py_ssize_t n_nodes, const float[:, ::1] X,
            float[::1] scratch, long long[::1] out_bmu, double[::1] out_distance):
    """BMU of every row of X by the prototypes (level 0) alone.

    IN:  W [cap, depth, d], n_nodes >= 1, X [n, d]
    OUT: out_bmu [n] (ties -> lowest index), out_distance [n] (Euclidean);
         scratch [>= n_nodes] (squared distances of the last row)
    """
    cdef Py_ssize_t i, j, best, d = X.shape[1], stride = W.shape[1] * W.shape[2]
    with nogil:
        for i in range(X.shape[0]):
            sq_distances(&X[i, 0], &W[0, 0, 0], n_nodes, stride, d, &scratch[0])
            best = 0
            for j in range(1, n_nodes):
                if scratch[j] < scratch[best]:
                    best = j
            out_bmu[i] = best
            out_distance[i] = sqrt(<double>scratch[best])


def trajectories(const int[:, ::1] syn, const float[:, ::1] syn_cnt, const int[::1] syn_deg,
                 Py_ssize_t n_nodes, long long[:, ::1] out_path, long long[::1] out_length):
    """One RNAT per node: follow the strongest temporal synapse (ties -> lowest index).

    IN:  syn, syn_cnt [cap, T], syn_deg [cap], n_nodes
    OUT: out_path [n_nodes, length] (node indices), out_length [n_nodes] (stops early at a node
         without successors)
    """
    cdef Py_ssize_t start, step, length = out_path.shape[1]
    cdef int node, p, best
    with nogil:
        for start in range(n_nodes):
            node = <int>start
            out_path[start, 0] = node
            out_length[start] = 1
            for step in range(1, length):
                if syn_deg[node] == 0:
                    break
                best = 0
                for p in range(1, syn_deg[node]):
                    if syn_cnt[node, p] > syn_cnt[node, best] or (
                        syn_cnt[node, p] == syn_cnt[node, best] and syn[node, p] < syn[node, best]
                    ):
                        best = p
                node = syn[node, best]
                out_path[start, step] = node
                out_length[start] = step + 1


def train(
    const float[:, ::1] X,
    const long long[::1] labels,
    const unsigned char[::1] starts,
    long long epochs,
    long long start_iteration,
    float[:, :, ::1] W,
    float[::1] hab,
    float[:, ::1] hist,
    int[:, ::1] nbr,
    long long[:, ::1] stamp,
    int[::1] deg,
    int[:, ::1] syn,
    float[:, ::1] syn_cnt,
    int[::1] syn_deg,
    long long[::1] counters,
    float[:, ::1] previous_weights,
    float[:, ::1] g,
    float[:, ::1] scratch,
    const double[::1] alphas,
    dict params,
):
    """Run the GWR training loop over ``epochs`` passes of X, from ``start_iteration``.

    IN:     X [n, d], labels [n] (histogram columns), starts [n] (1 = sequence start), epochs,
            start_iteration (epoch * n + i to resume at), alphas [depth], params (scalars)
    IN/OUT: W, hab, hist, nbr, stamp, deg, syn, syn_cnt, syn_deg (the network);
            counters = [n_nodes, clock, previous BMU]; previous_weights [depth, d]
    OUT:    g [depth, d], scratch [depth, >= cap] (work space)
    Returns the iteration to resume at: ``epochs * n`` when done, less when a node must be
    inserted but the buffers are full (nothing of that sample has been applied yet).
    """
    cdef double a_threshold = params["activation_threshold"]
    cdef double h_threshold = params["habituation_threshold"]
    cdef double eps_b = params["epsilon_b"], eps_n = params["epsilon_n"]
    cdef double tau_b = params["tau_b"], tau_n = params["tau_n"], kappa = params["kappa"]
    cdef double mod_rate = params["mod_rate"], beta = params["beta"]
    cdef double a_inc = params["a_inc"], a_dec = params["a_dec"]
    cdef long long max_age = params["max_age"], max_nodes = params["max_nodes"]
    cdef bint regulated = params["regulated"]
    cdef bint insert_at_input = params["insert_at_input"]
    cdef int n_labels = params["n_labels"]
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], depth = W.shape[1], cap = W.shape[0]
    cdef long long total = epochs * n, it
    cdef Py_ssize_t i, k, j, levels
    cdef int b, s, node, y, p, l, previous
    cdef long long n_nodes = counters[0], clock = counters[1]
    cdef double dist, best, second, activation, rate_b, rate_n, v
    cdef bint strong
    previous = <int>counters[2]
    with nogil:
        it = start_iteration
        while it < total:
            i = it % n
            y = <int>labels[i]
            if i == 0 or starts[i]:
                previous = -1
            # 1. global context from the previous BMU (its weights before its update)
            for j in range(d):
                g[0, j] = X[i, j]
            if previous >= 0:
                for k in range(1, depth):
                    for j in range(d):
                        g[k, j] = <float>(beta * <double>previous_weights[k, j]
                                          + (1.0 - beta) * <double>previous_weights[k - 1, j])
            if n_nodes < 2:
                # bootstrap: the first two samples become nodes (unknown context = the input)
                if n_nodes == cap:
                    break
                if previous < 0:
                    for k in range(1, depth):
                        for j in range(d):
                            g[k, j] = X[i, j]
                node = <int>n_nodes
                _new_node(W, hab, hist, nbr, deg, syn_deg, g, node, y, a_inc)
                n_nodes += 1
                if node == 1:
                    clock += 1
                    connect(0, 1, clock, nbr, stamp, deg)
                count_transition(previous, node, syn, syn_cnt, syn_deg)
                previous = node
                _copy_node(W, node, previous_weights)
                if i == n - 1:
                    remove_old_edges(n_nodes, clock, max_age, nbr, stamp, deg)
                it += 1
                continue
            # 2. BMU and second BMU (context levels only when the context is known)
            levels = depth if previous >= 0 else 1
            best = _two_best(W, g, n_nodes, levels, alphas, scratch, &b, &s)
            if previous < 0:
                for k in range(1, depth):
                    for j in range(d):
                        g[k, j] = W[b, k, j]
            # 3. strong (GWR) or weak (regulated, label already right) step
            activation = exp(-best)
            strong = (not regulated) or _argmax(hist, b, n_labels) != y
            if (
                strong
                and activation < a_threshold
                and hab[b] < h_threshold
                and n_nodes < max_nodes
            ):
                # 4. insert a node halfway between the BMU and the input (or at the input)
                if n_nodes == cap:
                    break
                node = <int>n_nodes
                if not insert_at_input:
                    for k in range(depth):
                        for j in range(d):
                            g[k, j] = <float>(0.5 * (<double>W[b, k, j] + <double>g[k, j]))
                _new_node(W, hab, hist, nbr, deg, syn_deg, g, node, y, a_inc)
                _copy_node(W, b, previous_weights)  # the BMU is unchanged by an insertion
                n_nodes += 1
                clock += 1
                disconnect(b, s, nbr, stamp, deg)
                connect(b, node, clock, nbr, stamp, deg)
                connect(s, node, clock, nbr, stamp, deg)
                count_transition(previous, node, syn, syn_cnt, syn_deg)
            else:
                # 5. move the BMU and its neighbours towards the input context
                rate_b = eps_b if strong else eps_b * mod_rate
                rate_n = eps_n if strong else eps_n * mod_rate
                _copy_node(W, b, previous_weights)  # before its update
                _habituate(hab, b, tau_b, kappa)
                _move(W, g, b, rate_b * <double>hab[b])
                for l in range(n_labels):
                    v = hist[b, l]
                    if l == y:
                        hist[b, l] = <float>(v + a_inc)
                    else:
                        hist[b, l] = <float>(v - a_dec if v - a_dec > 0.0 else 0.0)
                clock += 1
                connect(b, s, clock, nbr, stamp, deg)
                for p in range(deg[b]):
                    node = nbr[b, p]
                    _move(W, g, node, rate_n * <double>hab[node])
                    _habituate(hab, node, tau_n, kappa)
                count_transition(previous, b, syn, syn_cnt, syn_deg)
            previous = b
            # 6. age out edges at the end of each epoch
            if i == n - 1:
                remove_old_edges(n_nodes, clock, max_age, nbr, stamp, deg)
            it += 1
    counters[0] = n_nodes
    counters[1] = clock
    counters[2] = previous
    return it
