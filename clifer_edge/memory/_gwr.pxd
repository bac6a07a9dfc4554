# Shared signatures of the GWR kernels (see _gwr.pyx). All take already-validated buffers.

cdef void sq_distances(const float* x, const float* W, Py_ssize_t n_rows, Py_ssize_t stride,
                       Py_ssize_t d, float* out) noexcept nogil

cdef void connect(int i, int j, long long clock, int[:, ::1] nbr, long long[:, ::1] stamp,
                  int[::1] deg) noexcept nogil

cdef void disconnect(int i, int j, int[:, ::1] nbr, long long[:, ::1] stamp,
                     int[::1] deg) noexcept nogil

cdef void count_transition(int previous, int current, int[:, ::1] syn, float[:, ::1] syn_cnt,
                           int[::1] syn_deg) noexcept nogil

cdef void remove_old_edges(Py_ssize_t n_nodes, long long clock, long long max_age,
                           int[:, ::1] nbr, long long[:, ::1] stamp, int[::1] deg) noexcept nogil
