/*
 * C ABI test: every collective against a plain C reference.
 *
 * All-reduce, reduce, reduce-scatter (every datatype x sum/prod/max/min, and
 * avg for floating types), broadcast and ncclBcast, all-gather, all-to-all,
 * gather and scatter (every datatype), each out of place and in place as
 * NCCL defines it:
 *   all-reduce, reduce, broadcast: sendbuff == recvbuff
 *   all-gather:     sendbuff == recvbuff + rank * sendcount
 *   reduce-scatter: recvbuff == sendbuff + rank * recvcount
 *   gather:         sendbuff == recvbuff + root * count (on the root)
 *   scatter:        recvbuff == sendbuff + root * count (on the root)
 * with every rank as the root of the rooted collectives, count 0, and a few
 * large messages. Out-of-place calls must leave the send buffer unchanged.
 * Buffers NCCL documents as unused (reduce's recvbuff off the root, gather's
 * recvbuff and scatter's sendbuff off the root) are passed as NULL.
 */
#include "common.h"

static ncclComm_t comm;
static int rank, nranks;

static const ncclRedOp_t OPS[] = {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg};
#define N_OPS (sizeof OPS / sizeof OPS[0])
static const size_t COUNTS[] = {1, 1027, 70001};
#define N_COUNTS (sizeof COUNTS / sizeof COUNTS[0])

static int op_valid(const dtype_t *t, ncclRedOp_t op) { return op != ncclAvg || t->is_float; }

static void fill_input(const dtype_t *t, void *buf, size_t n, int r, int salt) {
    for (size_t i = 0; i < n; i++) put(t, buf, i, input_value(t, r, i, salt));
}

static void fill_move(const dtype_t *t, void *buf, size_t n, int r, int salt) {
    for (size_t i = 0; i < n; i++) put(t, buf, i, move_value(t, r, i, salt));
}

static void test_allreduce(const dtype_t *t, ncclRedOp_t op, size_t count, int inplace,
                           int salt) {
    void *send = xmalloc(count * t->size);
    void *recv = inplace ? send : xmalloc(count * t->size);
    fill_input(t, send, count, rank, salt);
    if (!inplace) poison(recv, count * t->size);
    NCCLCHECK(ncclAllReduce(send, recv, count, t->type, op, comm, STREAM));
    const char *mode = inplace ? "in place" : "out of place";
    CHECK_ELEMENTS(t, recv, count, reduced_input(t, op, i, salt),
                   "all-reduce %s %s count %zu %s", t->name, op_name(op), count, mode);
    if (!inplace) {
        CHECK_ELEMENTS(t, send, count, input_value(t, rank, i, salt),
                       "all-reduce %s %s modified its send buffer", t->name, op_name(op));
        free(recv);
    }
    free(send);
}

static void test_reduce(const dtype_t *t, ncclRedOp_t op, int root, size_t count,
                        int inplace, int salt) {
    void *send = xmalloc(count * t->size);
    void *recv = NULL;
    fill_input(t, send, count, rank, salt);
    if (inplace) {
        recv = send;
    } else if (rank == root) {
        recv = xmalloc(count * t->size);
        poison(recv, count * t->size);
    }
    NCCLCHECK(ncclReduce(send, recv, count, t->type, op, root, comm, STREAM));
    if (rank == root)
        CHECK_ELEMENTS(t, recv, count, reduced_input(t, op, i, salt),
                       "reduce %s %s root %d count %zu %s", t->name, op_name(op), root,
                       count, inplace ? "in place" : "out of place");
    if (!inplace) {
        CHECK_ELEMENTS(t, send, count, input_value(t, rank, i, salt),
                       "reduce %s %s root %d modified its send buffer", t->name,
                       op_name(op), root);
        free(recv);
    }
    free(send);
}

static void test_reduce_scatter(const dtype_t *t, ncclRedOp_t op, size_t recvcount,
                                int inplace, int salt) {
    size_t total = recvcount * (size_t)nranks;
    char *send = xmalloc(total * t->size);
    char *recv = inplace ? send + (size_t)rank * recvcount * t->size
                         : xmalloc(recvcount * t->size);
    fill_input(t, send, total, rank, salt);
    if (!inplace) poison(recv, recvcount * t->size);
    NCCLCHECK(ncclReduceScatter(send, recv, recvcount, t->type, op, comm, STREAM));
    CHECK_ELEMENTS(t, recv, recvcount,
                   reduced_input(t, op, (size_t)rank * recvcount + i, salt),
                   "reduce-scatter %s %s recvcount %zu %s", t->name, op_name(op), recvcount,
                   inplace ? "in place" : "out of place");
    if (!inplace) {
        CHECK_ELEMENTS(t, send, total, input_value(t, rank, i, salt),
                       "reduce-scatter %s %s modified its send buffer", t->name,
                       op_name(op));
        free(recv);
    }
    free(send);
}

/* ncclBroadcast out of place / in place, or the in-place-only ncclBcast. */
static void test_broadcast(const dtype_t *t, int root, size_t count, int mode, int salt) {
    static const char *names[3] = {"out of place", "in place", "ncclBcast"};
    void *recv = xmalloc(count * t->size);
    void *send = mode == 0 ? xmalloc(count * t->size) : recv;
    if (rank == root) {
        fill_move(t, send, count, root, salt);
    } else {
        poison(send, count * t->size);
    }
    if (mode == 0) poison(recv, count * t->size);
    if (mode == 2)
        NCCLCHECK(ncclBcast(recv, count, t->type, root, comm, STREAM));
    else
        NCCLCHECK(ncclBroadcast(send, recv, count, t->type, root, comm, STREAM));
    CHECK_ELEMENTS(t, recv, count, move_value(t, root, i, salt),
                   "broadcast %s root %d count %zu %s", t->name, root, count, names[mode]);
    if (mode == 0) {
        if (rank == root)
            CHECK_ELEMENTS(t, send, count, move_value(t, root, i, salt),
                           "broadcast %s root %d modified its send buffer", t->name, root);
        free(send);
    }
    free(recv);
}

static void test_allgather(const dtype_t *t, size_t count, int inplace, int salt) {
    size_t total = count * (size_t)nranks;
    char *recv = xmalloc(total * t->size);
    char *send = inplace ? recv + (size_t)rank * count * t->size : xmalloc(count * t->size);
    poison(recv, total * t->size);
    fill_move(t, send, count, rank, salt);
    NCCLCHECK(ncclAllGather(send, recv, count, t->type, comm, STREAM));
    CHECK_ELEMENTS(t, recv, total, move_value(t, (int)(i / count), i % count, salt),
                   "all-gather %s count %zu %s", t->name, count,
                   inplace ? "in place" : "out of place");
    if (!inplace) {
        CHECK_ELEMENTS(t, send, count, move_value(t, rank, i, salt),
                       "all-gather %s modified its send buffer", t->name);
        free(send);
    }
    free(recv);
}

static void test_alltoall(const dtype_t *t, size_t count, int salt) {
    size_t total = count * (size_t)nranks;
    void *send = xmalloc(total * t->size);
    void *recv = xmalloc(total * t->size);
    fill_move(t, send, total, rank, salt); /* block j goes to rank j */
    poison(recv, total * t->size);
    NCCLCHECK(ncclAlltoAll(send, recv, count, t->type, comm, STREAM));
    /* Block s of recv comes from rank s, which sent its block `rank`. */
    CHECK_ELEMENTS(t, recv, total,
                   move_value(t, (int)(i / count), (size_t)rank * count + i % count, salt),
                   "all-to-all %s count %zu", t->name, count);
    CHECK_ELEMENTS(t, send, total, move_value(t, rank, i, salt),
                   "all-to-all %s modified its send buffer", t->name);
    free(send);
    free(recv);
}

static void test_gather(const dtype_t *t, int root, size_t count, int inplace, int salt) {
    size_t total = count * (size_t)nranks;
    char *recv = NULL, *send;
    if (rank == root) {
        recv = xmalloc(total * t->size);
        poison(recv, total * t->size);
    }
    send = (inplace && rank == root) ? recv + (size_t)root * count * t->size
                                     : xmalloc(count * t->size);
    fill_move(t, send, count, rank, salt);
    NCCLCHECK(ncclGather(send, recv, count, t->type, root, comm, STREAM));
    if (rank == root)
        CHECK_ELEMENTS(t, recv, total, move_value(t, (int)(i / count), i % count, salt),
                       "gather %s root %d count %zu %s", t->name, root, count,
                       inplace ? "in place" : "out of place");
    if (!(inplace && rank == root)) {
        CHECK_ELEMENTS(t, send, count, move_value(t, rank, i, salt),
                       "gather %s root %d modified its send buffer", t->name, root);
        free(send);
    }
    free(recv);
}

static void test_scatter(const dtype_t *t, int root, size_t count, int inplace, int salt) {
    size_t total = count * (size_t)nranks;
    char *send = NULL, *recv;
    if (rank == root) {
        send = xmalloc(total * t->size);
        fill_move(t, send, total, root, salt);
    }
    recv = (inplace && rank == root) ? send + (size_t)root * count * t->size
                                     : xmalloc(count * t->size);
    if (!(inplace && rank == root)) poison(recv, count * t->size);
    NCCLCHECK(ncclScatter(send, recv, count, t->type, root, comm, STREAM));
    CHECK_ELEMENTS(t, recv, count, move_value(t, root, (size_t)rank * count + i, salt),
                   "scatter %s root %d count %zu %s", t->name, root, count,
                   inplace ? "in place" : "out of place");
    if (rank == root)
        CHECK_ELEMENTS(t, send, total, move_value(t, root, i, salt),
                       "scatter %s root %d modified its send buffer", t->name, root);
    if (!(inplace && rank == root)) free(recv);
    free(send);
}

/* Count 0 is a valid no-op for every collective; nothing may be written. */
static void test_count_zero(void) {
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8};
    NCCLCHECK(ncclAllReduce(a, b, 0, ncclFloat32, ncclSum, comm, STREAM));
    NCCLCHECK(ncclBroadcast(a, b, 0, ncclFloat32, 0, comm, STREAM));
    NCCLCHECK(ncclReduce(a, b, 0, ncclFloat32, ncclSum, 0, comm, STREAM));
    NCCLCHECK(ncclAllGather(a, b, 0, ncclFloat32, comm, STREAM));
    NCCLCHECK(ncclReduceScatter(a, b, 0, ncclFloat32, ncclSum, comm, STREAM));
    NCCLCHECK(ncclAlltoAll(a, b, 0, ncclFloat32, comm, STREAM));
    NCCLCHECK(ncclGather(a, b, 0, ncclFloat32, 0, comm, STREAM));
    NCCLCHECK(ncclScatter(a, b, 0, ncclFloat32, 0, comm, STREAM));
    CHECK(a[0] == 1 && a[3] == 4 && b[0] == 5 && b[3] == 8, "a count-0 collective wrote data");
}

/* The profiling names (pnccl*) are the same functions. */
static void test_pnccl_names(void) {
    int64_t x = rank + 1, y = -1;
    NCCLCHECK(pncclAllReduce(&x, &y, 1, ncclInt64, ncclSum, comm, STREAM));
    CHECK(y == (int64_t)nranks * (nranks + 1) / 2, "pncclAllReduce: got %lld",
          (long long)y);
    NCCLCHECK(pncclBroadcast(&x, &y, 1, ncclInt64, nranks - 1, comm, STREAM));
    CHECK(y == nranks, "pncclBroadcast: got %lld", (long long)y);
}

int main(void) {
    test_init(&rank, &nranks);
    comm = init_comm("collectives");
    double t0 = now_s();
    int salt = 0;

    /* OXCCL_TEST_QUICK=1 (used under valgrind): small counts only. */
    const char *quick_env = getenv("OXCCL_TEST_QUICK");
    int quick = quick_env != NULL && strcmp(quick_env, "1") == 0;
    for (size_t d = 0; d < N_DTYPES; d++) {
        const dtype_t *t = &DTYPES[d];
        for (size_t c = 0; c < N_COUNTS; c++) {
            size_t n = COUNTS[c];
            if (quick && n > 2000) continue;
            for (int inplace = 0; inplace < 2; inplace++) {
                for (size_t o = 0; o < N_OPS; o++) {
                    if (!op_valid(t, OPS[o])) continue;
                    test_allreduce(t, OPS[o], n, inplace, ++salt);
                    test_reduce_scatter(t, OPS[o], n, inplace, ++salt);
                }
                test_allgather(t, n, inplace, ++salt);
            }
            test_alltoall(t, n, ++salt);
        }
        /* Rooted collectives: every root, one odd count. */
        for (int root = 0; root < nranks; root++) {
            for (int inplace = 0; inplace < 2; inplace++) {
                for (size_t o = 0; o < N_OPS; o++)
                    if (op_valid(t, OPS[o])) test_reduce(t, OPS[o], root, 515, inplace, ++salt);
                test_gather(t, root, 515, inplace, ++salt);
                test_scatter(t, root, 515, inplace, ++salt);
            }
            for (int mode = 0; mode < 3; mode++) test_broadcast(t, root, 515, mode, ++salt);
        }
    }
    test_count_zero();
    test_pnccl_names();

    if (quick) goto done;
    /* Large messages (several MiB), the paths a pipelined transport takes. */
    const dtype_t *f32 = &DTYPES[7], *f64 = &DTYPES[8];
    CHECK(f32->type == ncclFloat32 && f64->type == ncclFloat64, "DTYPES order changed");
    test_allreduce(f32, ncclSum, (1u << 20) + 3, 0, ++salt);
    test_allreduce(f64, ncclMax, (1u << 19) + 1, 1, ++salt);
    test_allgather(f32, (1u << 18) + 5, 1, ++salt);
    test_reduce_scatter(f32, ncclSum, (1u << 18) + 7, 0, ++salt);
    test_broadcast(f32, nranks - 1, (1u << 20) + 1, 0, ++salt);
    test_alltoall(f64, (1u << 16) + 1, ++salt);
done:
    NCCLCHECK(ncclCommDestroy(comm));
    if (rank == 0)
        printf("abi_collectives: %d ranks, %d collective checks, %.2f s\n", nranks, salt,
               now_s() - t0);
    return 0;
}
