/*
 * C ABI test: point-to-point and group semantics.
 *
 *  - ncclSend/ncclRecv rings inside ncclGroupStart/End in both directions at
 *    once, with messages of several MiB (a blocking implementation would
 *    deadlock here), and a send to self;
 *  - ordered send/recv between pairs of ranks outside any group;
 *  - an all-to-all-v made of grouped sends/receives, some of count 0;
 *  - several different collectives fused in one group;
 *  - nested groups mixing collectives and point-to-point;
 *  - one group spanning two communicators (the world and a split of it);
 *  - ncclGroupSimulateEnd: success, a positive estimated time, nothing
 *    executed, and the group closed afterwards;
 *  - ncclRedOpCreatePreMulSum with host-immediate and device-resident scalars
 *    in all-reduce, reduce and reduce-scatter, then ncclRedOpDestroy.
 */
#include "common.h"

static ncclComm_t comm;
static int rank, nranks;

static const dtype_t *find_type(ncclDataType_t type) {
    for (size_t d = 0; d < N_DTYPES; d++)
        if (DTYPES[d].type == type) return &DTYPES[d];
    FAIL("datatype %d not in DTYPES", (int)type);
}

static void fill_move(const dtype_t *t, void *buf, size_t n, int r, int salt) {
    for (size_t i = 0; i < n; i++) put(t, buf, i, move_value(t, r, i, salt));
}

static void test_ring_both_directions(const dtype_t *t, size_t count) {
    int next = (rank + 1) % nranks, prev = (rank + nranks - 1) % nranks;
    size_t bytes = count * t->size;
    void *to_next = xmalloc(bytes), *to_prev = xmalloc(bytes);
    void *from_prev = xmalloc(bytes), *from_next = xmalloc(bytes);
    fill_move(t, to_next, count, rank, 1);
    fill_move(t, to_prev, count, rank, 2);
    poison(from_prev, bytes);
    poison(from_next, bytes);
    NCCLCHECK(ncclGroupStart());
    NCCLCHECK(ncclSend(to_next, count, t->type, next, comm, STREAM));
    NCCLCHECK(ncclRecv(from_prev, count, t->type, prev, comm, STREAM));
    NCCLCHECK(ncclSend(to_prev, count, t->type, prev, comm, STREAM));
    NCCLCHECK(ncclRecv(from_next, count, t->type, next, comm, STREAM));
    NCCLCHECK(ncclGroupEnd());
    CHECK_ELEMENTS(t, from_prev, count, move_value(t, prev, i, 1),
                   "ring %s count %zu: data from the previous rank %d", t->name, count, prev);
    CHECK_ELEMENTS(t, from_next, count, move_value(t, next, i, 2),
                   "ring %s count %zu: data from the next rank %d", t->name, count, next);
    free(to_next);
    free(to_prev);
    free(from_prev);
    free(from_next);
}

static void test_self_send(void) {
    const dtype_t *t = find_type(ncclInt64);
    size_t count = 4099;
    void *a = xmalloc(count * 8), *b = xmalloc(count * 8);
    fill_move(t, a, count, rank, 3);
    poison(b, count * 8);
    NCCLCHECK(ncclGroupStart());
    NCCLCHECK(ncclSend(a, count, ncclInt64, rank, comm, STREAM));
    NCCLCHECK(ncclRecv(b, count, ncclInt64, rank, comm, STREAM));
    NCCLCHECK(ncclGroupEnd());
    CHECK_ELEMENTS(t, b, count, move_value(t, rank, i, 3), "send to self");
    free(a);
    free(b);
}

/* Pairs (0,1), (2,3), ...: the even rank sends then receives, the odd rank
 * receives then sends; no group, so each call completes on its own. */
static void test_ordered_pairs(size_t count) {
    int peer = rank ^ 1;
    if (peer >= nranks) return;
    const dtype_t *t = find_type(ncclFloat32);
    float *out = xmalloc(count * 4), *in = xmalloc(count * 4);
    fill_move(t, out, count, rank, 4);
    poison(in, count * 4);
    if (rank % 2 == 0) {
        NCCLCHECK(ncclSend(out, count, ncclFloat32, peer, comm, STREAM));
        NCCLCHECK(ncclRecv(in, count, ncclFloat32, peer, comm, STREAM));
    } else {
        NCCLCHECK(ncclRecv(in, count, ncclFloat32, peer, comm, STREAM));
        NCCLCHECK(ncclSend(out, count, ncclFloat32, peer, comm, STREAM));
    }
    CHECK_ELEMENTS(t, in, count, move_value(t, peer, i, 4),
                   "ungrouped send/recv with rank %d, count %zu", peer, count);
    free(out);
    free(in);
}

static size_t v_count(int src, int dst) { return (size_t)((src * 3 + dst) % 4) * 257u; }

static void test_alltoallv(void) {
    const dtype_t *t = find_type(ncclUint8);
    void *out[256], *in[256];
    NCCLCHECK(ncclGroupStart());
    for (int p = 0; p < nranks; p++) {
        out[p] = xmalloc(v_count(rank, p));
        in[p] = xmalloc(v_count(p, rank));
        fill_move(t, out[p], v_count(rank, p), rank, 10 + p);
        poison(in[p], v_count(p, rank));
        NCCLCHECK(ncclSend(out[p], v_count(rank, p), ncclUint8, p, comm, STREAM));
        NCCLCHECK(ncclRecv(in[p], v_count(p, rank), ncclUint8, p, comm, STREAM));
    }
    NCCLCHECK(ncclGroupEnd());
    for (int p = 0; p < nranks; p++) {
        CHECK_ELEMENTS(t, in[p], v_count(p, rank), move_value(t, p, i, 10 + rank),
                       "all-to-all-v: block from rank %d", p);
        free(out[p]);
        free(in[p]);
    }
}

/* One group holding six different collectives on separate buffers. */
static void test_fused_collectives(int nested) {
    const size_t n = 1001;
    int root = nranks - 1;
    const dtype_t *t = find_type(ncclInt32);
    int32_t *ar = xmalloc(n * 4), *bc = xmalloc(n * 4), *ag = xmalloc(n * 4 * nranks);
    int32_t *rs_in = xmalloc(n * 4 * nranks), *rs_out = xmalloc(n * 4);
    int32_t *a2a_in = xmalloc(n * 4 * nranks), *a2a_out = xmalloc(n * 4 * nranks);
    int32_t *ring = xmalloc(n * 4), *ring_in = xmalloc(n * 4), *ag_in = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        put(t, ar, i, input_value(t, rank, i, 20));
        put(t, bc, i, rank == root ? move_value(t, root, i, 21) : -7);
        put(t, ring, i, move_value(t, rank, i, 24));
        put(t, ag_in, i, move_value(t, rank, i, 25));
    }
    for (size_t i = 0; i < n * (size_t)nranks; i++) {
        put(t, rs_in, i, input_value(t, rank, i, 22));
        put(t, a2a_in, i, move_value(t, rank, i, 23));
    }
    poison(ag, n * 4 * nranks);
    poison(rs_out, n * 4);
    poison(a2a_out, n * 4 * nranks);
    poison(ring_in, n * 4);
    int next = (rank + 1) % nranks, prev = (rank + nranks - 1) % nranks;

    NCCLCHECK(ncclGroupStart());
    if (nested) NCCLCHECK(ncclGroupStart());
    NCCLCHECK(ncclAllReduce(ar, ar, n, ncclInt32, ncclSum, comm, STREAM));
    NCCLCHECK(ncclBroadcast(bc, bc, n, ncclInt32, root, comm, STREAM));
    if (nested) NCCLCHECK(ncclGroupEnd());
    if (nested) {
        NCCLCHECK(ncclSend(ring, n, ncclInt32, next, comm, STREAM));
        NCCLCHECK(ncclRecv(ring_in, n, ncclInt32, prev, comm, STREAM));
        NCCLCHECK(ncclGroupStart());
    }
    NCCLCHECK(ncclAllGather(ag_in, ag, n, ncclInt32, comm, STREAM));
    NCCLCHECK(ncclReduceScatter(rs_in, rs_out, n, ncclInt32, ncclMax, comm, STREAM));
    NCCLCHECK(ncclAlltoAll(a2a_in, a2a_out, n, ncclInt32, comm, STREAM));
    if (nested) NCCLCHECK(ncclGroupEnd());
    NCCLCHECK(ncclGroupEnd());

    const char *what = nested ? "nested groups" : "fused group";
    CHECK_ELEMENTS(t, ar, n, reduced_input(t, ncclSum, i, 20), "%s: all-reduce", what);
    CHECK_ELEMENTS(t, bc, n, move_value(t, root, i, 21), "%s: broadcast", what);
    CHECK_ELEMENTS(t, ag, n * (size_t)nranks, move_value(t, (int)(i / n), i % n, 25),
                   "%s: all-gather", what);
    CHECK_ELEMENTS(t, rs_out, n, reduced_input(t, ncclMax, (size_t)rank * n + i, 22),
                   "%s: reduce-scatter", what);
    CHECK_ELEMENTS(t, a2a_out, n * (size_t)nranks,
                   move_value(t, (int)(i / n), (size_t)rank * n + i % n, 23),
                   "%s: all-to-all", what);
    if (nested)
        CHECK_ELEMENTS(t, ring_in, n, move_value(t, prev, i, 24), "%s: send/recv", what);
    free(ar);
    free(bc);
    free(ag);
    free(rs_in);
    free(rs_out);
    free(a2a_in);
    free(a2a_out);
    free(ring);
    free(ring_in);
    free(ag_in);
}

/* One group spanning two communicators (the world and a split copy of it). */
static void test_two_comm_group(void) {
    ncclComm_t dup = NULL;
    NCCLCHECK(ncclCommSplit(comm, 0, rank, &dup, NULL));
    const size_t n = 4099;
    const dtype_t *t = find_type(ncclFloat64);
    double *a = xmalloc(n * 8), *b = xmalloc(n * 8), *out = xmalloc(n * 8), *in = xmalloc(n * 8);
    for (size_t i = 0; i < n; i++) {
        put(t, a, i, input_value(t, rank, i, 40));
        put(t, b, i, input_value(t, rank, i, 41));
        put(t, out, i, move_value(t, rank, i, 42));
    }
    poison(in, n * 8);
    int next = (rank + 1) % nranks, prev = (rank + nranks - 1) % nranks;
    NCCLCHECK(ncclGroupStart());
    NCCLCHECK(ncclAllReduce(a, a, n, ncclFloat64, ncclSum, comm, STREAM));
    NCCLCHECK(ncclAllReduce(b, b, n, ncclFloat64, ncclMin, dup, STREAM));
    NCCLCHECK(ncclSend(out, n, ncclFloat64, next, dup, STREAM));
    NCCLCHECK(ncclRecv(in, n, ncclFloat64, prev, dup, STREAM));
    NCCLCHECK(ncclGroupEnd());
    CHECK_ELEMENTS(t, a, n, reduced_input(t, ncclSum, i, 40), "two-comm group: world all-reduce");
    CHECK_ELEMENTS(t, b, n, reduced_input(t, ncclMin, i, 41), "two-comm group: split all-reduce");
    CHECK_ELEMENTS(t, in, n, move_value(t, prev, i, 42), "two-comm group: send/recv");
    NCCLCHECK(ncclCommDestroy(dup));
    free(a);
    free(b);
    free(out);
    free(in);
}

static void test_simulate(void) {
    const size_t n = 1 << 16;
    float *a = xmalloc(n * 4), *b = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) a[i] = 1.0f;
    poison(b, n * 4);
    float poisoned = b[0];
    ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;
    NCCLCHECK(ncclGroupStart());
    NCCLCHECK(ncclAllReduce(a, b, n, ncclFloat32, ncclSum, comm, STREAM));
    NCCLCHECK(ncclGroupSimulateEnd(&sim));
    CHECK(sim.estimatedTime > 0.0f, "ncclGroupSimulateEnd: estimatedTime %g, expected > 0",
          (double)sim.estimatedTime);
    CHECK(memcmp(&b[0], &poisoned, 4) == 0 && memcmp(&b[n - 1], &poisoned, 4) == 0,
          "ncclGroupSimulateEnd executed the all-reduce (recvbuff was written)");
    /* The group is closed: a plain all-reduce runs now. */
    NCCLCHECK(ncclAllReduce(a, b, n, ncclFloat32, ncclSum, comm, STREAM));
    CHECK(b[0] == (float)nranks && b[n - 1] == (float)nranks,
          "all-reduce after ncclGroupSimulateEnd: got %g", (double)b[0]);
    free(a);
    free(b);
}

/* Sum over ranks r of scalar(r) * input(r, i), for a per-rank scalar r + 1. */
static double premul_ref(const dtype_t *t, size_t i, int salt, int scalar_shift) {
    double acc = 0;
    for (int r = 0; r < nranks; r++)
        acc += (double)(r + 1 + scalar_shift) * input_value(t, r, i, salt);
    return acc;
}

static void test_premulsum(ncclDataType_t type) {
    const dtype_t *t = find_type(type);
    const size_t n = 777;
    union { int32_t i32; float f; double d; } scalar;
    if (type == ncclInt32) scalar.i32 = rank + 1;
    else if (type == ncclFloat32) scalar.f = (float)(rank + 1);
    else scalar.d = rank + 1;
    ncclRedOp_t op;
    NCCLCHECK(ncclRedOpCreatePreMulSum(&op, &scalar, type, ncclScalarHostImmediate, comm));
    CHECK((int)op >= (int)ncclNumOps, "PreMulSum op %d collides with a built-in op", (int)op);
    /* Host-immediate: the value was read at creation, later changes don't count. */
    memset(&scalar, 0, sizeof scalar);

    void *x = xmalloc(n * t->size * nranks), *y = xmalloc(n * t->size * nranks);
    for (size_t i = 0; i < n; i++) put(t, x, i, input_value(t, rank, i, 30));
    NCCLCHECK(ncclAllReduce(x, y, n, type, op, comm, STREAM));
    CHECK_ELEMENTS(t, y, n, premul_ref(t, i, 30, 0), "PreMulSum all-reduce %s", t->name);

    int root = nranks / 2;
    poison(y, n * t->size);
    NCCLCHECK(ncclReduce(x, y, n, type, op, root, comm, STREAM));
    if (rank == root)
        CHECK_ELEMENTS(t, y, n, premul_ref(t, i, 30, 0), "PreMulSum reduce %s", t->name);

    for (size_t i = 0; i < n * (size_t)nranks; i++) put(t, x, i, input_value(t, rank, i, 31));
    NCCLCHECK(ncclReduceScatter(x, y, n, type, op, comm, STREAM));
    CHECK_ELEMENTS(t, y, n, premul_ref(t, (size_t)rank * n + i, 31, 0),
                   "PreMulSum reduce-scatter %s", t->name);
    NCCLCHECK(ncclRedOpDestroy(op, comm));

    /* Device residence: the scalar is read when the collective runs (host
     * memory is this library's device memory), so a later change counts. */
    double dscalar = 0;
    float fscalar = 0;
    void *sp = type == ncclFloat64 ? (void *)&dscalar : (void *)&fscalar;
    if (type != ncclInt32) {
        NCCLCHECK(ncclRedOpCreatePreMulSum(&op, sp, type, ncclScalarDevice, comm));
        dscalar = rank + 2;
        fscalar = (float)(rank + 2);
        for (size_t i = 0; i < n; i++) put(t, x, i, input_value(t, rank, i, 32));
        NCCLCHECK(ncclAllReduce(x, y, n, type, op, comm, STREAM));
        CHECK_ELEMENTS(t, y, n, premul_ref(t, i, 32, 1),
                       "PreMulSum with ncclScalarDevice %s (scalar changed after creation)",
                       t->name);
        NCCLCHECK(ncclRedOpDestroy(op, comm));
    }
    free(x);
    free(y);
}

/* Two live PreMulSum ops at once must stay distinct. */
static void test_two_premulsum_ops(void) {
    float s1 = 2.0f, s2 = 0.5f, x = (float)(rank + 1), y1 = 0, y2 = 0;
    ncclRedOp_t op1, op2;
    NCCLCHECK(ncclRedOpCreatePreMulSum(&op1, &s1, ncclFloat32, ncclScalarHostImmediate, comm));
    NCCLCHECK(ncclRedOpCreatePreMulSum(&op2, &s2, ncclFloat32, ncclScalarHostImmediate, comm));
    CHECK(op1 != op2, "two live PreMulSum ops share the handle %d", (int)op1);
    NCCLCHECK(ncclAllReduce(&x, &y1, 1, ncclFloat32, op1, comm, STREAM));
    NCCLCHECK(ncclAllReduce(&x, &y2, 1, ncclFloat32, op2, comm, STREAM));
    float sum = (float)nranks * (float)(nranks + 1) / 2.0f;
    CHECK(y1 == 2.0f * sum && y2 == 0.5f * sum,
          "two PreMulSum ops: got %g and %g, expected %g and %g",
          (double)y1, (double)y2, 2.0 * sum, 0.5 * sum);
    NCCLCHECK(ncclRedOpDestroy(op1, comm));
    NCCLCHECK(ncclRedOpDestroy(op2, comm));
}

int main(void) {
    test_init(&rank, &nranks);
    comm = init_comm("group_p2p");
    double t0 = now_s();

    test_ring_both_directions(find_type(ncclInt8), 3);
    test_ring_both_directions(find_type(ncclFloat64), 1027);
    test_ring_both_directions(find_type(ncclInt32), (8u << 20) / 4 + 1); /* 8 MiB */
    test_self_send();
    test_ordered_pairs(17);
    test_ordered_pairs((1u << 20) + 1);
    test_alltoallv();
    test_fused_collectives(0);
    test_fused_collectives(1);
    test_two_comm_group();
    test_simulate();
    test_premulsum(ncclFloat32);
    test_premulsum(ncclFloat64);
    test_premulsum(ncclInt32);
    test_two_premulsum_ops();

    NCCLCHECK(ncclCommDestroy(comm));
    if (rank == 0) printf("abi_group_p2p: %d ranks, %.2f s\n", nranks, now_s() - t0);
    return 0;
}
