/*
 * C ABI test: communicator life cycle and the calls around it.
 *
 *  - ncclGetVersion / pncclGetVersion; ncclGetUniqueId gives a new id each call;
 *  - ncclCommInitRank and the queries ncclCommCount, ncclCommUserRank,
 *    ncclCommCuDevice, ncclCommGetAsyncError;
 *  - ncclCommInitRankConfig: NULL config, a blocking config with a name, and
 *    a non-blocking one (blocking = 0: init, a collective and finalize may
 *    return ncclInProgress, polled with ncclCommGetAsyncError to a deadline),
 *    including a group and a split of a non-blocking communicator;
 *  - ncclCommSplit: even/odd colors with reversed keys, one color for all,
 *    and NCCL_SPLIT_NOCOLOR (that rank gets a NULL communicator);
 *  - ncclCommFinalize + ncclCommDestroy, ncclCommAbort (with and without
 *    traffic before it), and init/destroy repeated;
 *  - ncclCommInitAll in one process (devlist NULL and explicit), driven by a
 *    group from one thread and by one thread per communicator;
 *  - ncclMemAlloc / ncclMemFree, ncclCommRegister / ncclCommDeregister.
 */
#include "common.h"

#include <pthread.h>

static int rank, nranks;

/* Polls ncclCommGetAsyncError while it reports ncclInProgress. */
static ncclResult_t wait_ready(ncclComm_t c, const char *what) {
    double deadline = now_s() + 60.0;
    ncclResult_t state = ncclInProgress;
    for (;;) {
        NCCLCHECK(ncclCommGetAsyncError(c, &state));
        if (state != ncclInProgress) return state;
        CHECK(now_s() < deadline, "%s: still ncclInProgress after 60 s", what);
        sleep_ms(1);
    }
}

/* Sum of `value` over the members of a communicator, checked against want. */
static void check_allreduce(ncclComm_t c, int64_t value, int64_t want, const char *what) {
    int64_t got = -1;
    NCCLCHECK(ncclAllReduce(&value, &got, 1, ncclInt64, ncclSum, c, STREAM));
    CHECK(got == want, "%s: all-reduce gave %lld, expected %lld", what, (long long)got,
          (long long)want);
}

static void test_version(void) {
    int v = 0, pv = 0;
    NCCLCHECK(ncclGetVersion(&v));
    NCCLCHECK(pncclGetVersion(&pv));
    CHECK(v == pv, "ncclGetVersion %d != pncclGetVersion %d", v, pv);
    CHECK(v >= 20000 && v < 30000, "ncclGetVersion: %d is not a 2.x version code", v);
#ifndef OXCCL_TEST_NVIDIA_HEADER
    CHECK(v == NCCL_VERSION_CODE, "ncclGetVersion %d != NCCL_VERSION_CODE %d of our header", v,
          NCCL_VERSION_CODE);
#endif
}

/* Each ncclGetUniqueId call makes a new id. */
static void test_unique_ids(void) {
    ncclUniqueId a, b;
    NCCLCHECK(ncclGetUniqueId(&a));
    NCCLCHECK(pncclGetUniqueId(&b));
    CHECK(memcmp(&a, &b, sizeof a) != 0, "two ncclGetUniqueId calls gave the same id");
}

static void test_queries(ncclComm_t c) {
    int count = -1, user = -1, dev = -1;
    ncclResult_t async = ncclInternalError;
    NCCLCHECK(ncclCommCount(c, &count));
    NCCLCHECK(ncclCommUserRank(c, &user));
    NCCLCHECK(ncclCommCuDevice(c, &dev));
    NCCLCHECK(ncclCommGetAsyncError(c, &async));
    CHECK(count == nranks, "ncclCommCount: %d, expected %d", count, nranks);
    CHECK(user == rank, "ncclCommUserRank: %d, expected %d", user, rank);
    CHECK(dev >= 0, "ncclCommCuDevice: %d", dev);
    CHECK(async == ncclSuccess, "ncclCommGetAsyncError on a healthy comm: %d", (int)async);
}

static void test_config_init(void) {
    ncclUniqueId id;
    ncclComm_t c = NULL;

    exchange_id(&id, "cfg-null");
    NCCLCHECK(ncclCommInitRankConfig(&c, nranks, id, rank, NULL));
    check_allreduce(c, rank, (int64_t)nranks * (nranks - 1) / 2, "config NULL");
    NCCLCHECK(ncclCommDestroy(c));

    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 1;
    cfg.commName = "oxccl-abi-lifecycle";
    exchange_id(&id, "cfg-blocking");
    NCCLCHECK(ncclCommInitRankConfig(&c, nranks, id, rank, &cfg));
    test_queries(c);
    check_allreduce(c, 1, nranks, "blocking config");
    NCCLCHECK(ncclCommFinalize(c));
    NCCLCHECK(ncclCommDestroy(c));

    ncclConfig_t nb = NCCL_CONFIG_INITIALIZER;
    nb.blocking = 0;
    c = NULL;
    exchange_id(&id, "cfg-nonblocking");
    ncclResult_t r = ncclCommInitRankConfig(&c, nranks, id, rank, &nb);
    CHECK(r == ncclSuccess || r == ncclInProgress,
          "non-blocking ncclCommInitRankConfig returned %d (%s)", (int)r, ncclGetErrorString(r));
    CHECK(c != NULL, "non-blocking ncclCommInitRankConfig left the comm NULL");
    r = wait_ready(c, "non-blocking init");
    CHECK(r == ncclSuccess, "non-blocking init ended with %d (%s)", (int)r,
          ncclGetErrorString(r));
    test_queries(c);
    int64_t x = rank + 10, y = -1;
    r = ncclAllReduce(&x, &y, 1, ncclInt64, ncclSum, c, STREAM);
    CHECK(r == ncclSuccess || r == ncclInProgress, "non-blocking all-reduce returned %d (%s)",
          (int)r, ncclGetErrorString(r));
    r = wait_ready(c, "non-blocking all-reduce");
    CHECK(r == ncclSuccess, "non-blocking all-reduce ended with %d", (int)r);
    int64_t want = (int64_t)nranks * (nranks - 1) / 2 + 10 * nranks;
    CHECK(y == want, "non-blocking all-reduce gave %lld, expected %lld", (long long)y,
          (long long)want);
    /* A group on a non-blocking comm: ncclGroupEnd may return ncclInProgress. */
    int64_t g1 = rank, g2 = 1, h1 = -1, h2 = -1;
    NCCLCHECK(ncclGroupStart());
    r = ncclAllReduce(&g1, &h1, 1, ncclInt64, ncclSum, c, STREAM);
    CHECK(r == ncclSuccess || r == ncclInProgress, "grouped non-blocking all-reduce: %d", (int)r);
    r = ncclAllReduce(&g2, &h2, 1, ncclInt64, ncclMax, c, STREAM);
    CHECK(r == ncclSuccess || r == ncclInProgress, "grouped non-blocking all-reduce: %d", (int)r);
    r = ncclGroupEnd();
    CHECK(r == ncclSuccess || r == ncclInProgress, "non-blocking ncclGroupEnd returned %d (%s)",
          (int)r, ncclGetErrorString(r));
    r = wait_ready(c, "non-blocking group");
    CHECK(r == ncclSuccess, "non-blocking group ended with %d", (int)r);
    CHECK(h1 == (int64_t)nranks * (nranks - 1) / 2 && h2 == 1,
          "non-blocking group results %lld and %lld", (long long)h1, (long long)h2);

    /* A non-blocking split: the child inherits blocking = 0 from its config. */
    ncclComm_t child = NULL;
    r = ncclCommSplit(c, 0, rank, &child, &nb);
    CHECK(r == ncclSuccess || r == ncclInProgress, "non-blocking ncclCommSplit returned %d",
          (int)r);
    r = wait_ready(c, "non-blocking split (parent)");
    CHECK(r == ncclSuccess, "non-blocking split: parent ended with %d", (int)r);
    CHECK(child != NULL, "non-blocking ncclCommSplit left the new comm NULL");
    r = wait_ready(child, "non-blocking split (child)");
    CHECK(r == ncclSuccess, "non-blocking split: child ended with %d", (int)r);
    test_queries(child);
    r = ncclAllReduce(&x, &y, 1, ncclInt64, ncclSum, child, STREAM);
    CHECK(r == ncclSuccess || r == ncclInProgress, "all-reduce on the split comm: %d", (int)r);
    CHECK(wait_ready(child, "all-reduce on the split comm") == ncclSuccess, "split all-reduce");
    CHECK(y == want, "all-reduce on the non-blocking split: %lld", (long long)y);
    r = ncclCommDestroy(child);
    CHECK(r == ncclSuccess || r == ncclInProgress, "destroying the split comm: %d", (int)r);

    r = ncclCommFinalize(c);
    CHECK(r == ncclSuccess || r == ncclInProgress, "non-blocking finalize returned %d", (int)r);
    r = wait_ready(c, "non-blocking finalize");
    CHECK(r == ncclSuccess, "non-blocking finalize ended with %d", (int)r);
    NCCLCHECK(ncclCommDestroy(c));
}

static void test_split(ncclComm_t world) {
    /* Even/odd colors, keys reversing the order inside each color. */
    int color = rank % 2, same = 0, newrank_want = 0, sum_want = 0;
    for (int r = 0; r < nranks; r++) {
        if (r % 2 != color) continue;
        same++;
        sum_want += r;
        if (r > rank) newrank_want++;
    }
    ncclComm_t sub = NULL;
    NCCLCHECK(ncclCommSplit(world, color, nranks - rank, &sub, NULL));
    CHECK(sub != NULL, "ncclCommSplit returned a NULL comm for color %d", color);
    int count = -1, user = -1;
    NCCLCHECK(ncclCommCount(sub, &count));
    NCCLCHECK(ncclCommUserRank(sub, &user));
    CHECK(count == same, "split color %d: %d ranks, expected %d", color, count, same);
    CHECK(user == newrank_want, "split color %d key %d: rank %d, expected %d", color,
          nranks - rank, user, newrank_want);
    check_allreduce(sub, rank, sum_want, "split by parity");

    /* One color for all, equal keys: ties keep the parent's order. */
    ncclComm_t dup = NULL;
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 1;
    NCCLCHECK(ncclCommSplit(world, 7, 0, &dup, &cfg));
    NCCLCHECK(ncclCommCount(dup, &count));
    NCCLCHECK(ncclCommUserRank(dup, &user));
    CHECK(count == nranks && user == rank, "split with one color: rank %d of %d", user, count);

    /* Rank 0 opts out. */
    ncclComm_t rest = (ncclComm_t)&rest; /* must be overwritten with NULL */
    NCCLCHECK(ncclCommSplit(world, rank == 0 ? NCCL_SPLIT_NOCOLOR : 0, rank, &rest, NULL));
    if (rank == 0) {
        CHECK(rest == NULL, "NCCL_SPLIT_NOCOLOR: newcomm is not NULL");
    } else {
        NCCLCHECK(ncclCommCount(rest, &count));
        NCCLCHECK(ncclCommUserRank(rest, &user));
        CHECK(count == nranks - 1 && user == rank - 1, "split without rank 0: rank %d of %d",
              user, count);
        check_allreduce(rest, 1, nranks - 1, "split without rank 0");
        NCCLCHECK(ncclCommDestroy(rest));
    }
    /* The parent and the children work side by side. */
    check_allreduce(world, 1, nranks, "parent after splits");
    check_allreduce(dup, 2, 2 * nranks, "one-color split");
    NCCLCHECK(ncclCommDestroy(dup));
    NCCLCHECK(ncclCommFinalize(sub));
    NCCLCHECK(ncclCommDestroy(sub));
}

static void test_abort(void) {
    ncclComm_t c = init_comm("abort-busy");
    check_allreduce(c, 1, nranks, "before abort");
    NCCLCHECK(ncclCommAbort(c));
    c = init_comm("abort-idle");
    NCCLCHECK(ncclCommAbort(c));
}

static void test_repeated_init(void) {
    char tag[32];
    for (int k = 0; k < 3; k++) {
        snprintf(tag, sizeof tag, "repeat-%d", k);
        ncclComm_t c = init_comm(tag);
        check_allreduce(c, k, (int64_t)k * nranks, "repeated init");
        NCCLCHECK(ncclCommDestroy(c));
    }
}

#define LOCAL_N 3

typedef struct {
    ncclComm_t comm;
    int index;
    int64_t result;
    ncclResult_t status;
} thread_arg_t;

static void *thread_body(void *p) {
    thread_arg_t *a = p;
    int64_t v = a->index + 1;
    a->status = ncclAllReduce(&v, &a->result, 1, ncclInt64, ncclSum, a->comm, STREAM);
    return NULL;
}

static void test_init_all(void) {
    ncclComm_t comms[LOCAL_N];
    int devs[LOCAL_N] = {2, 0, 1};
    for (int pass = 0; pass < 2; pass++) {
        memset(comms, 0, sizeof comms);
        NCCLCHECK(ncclCommInitAll(comms, LOCAL_N, pass == 0 ? NULL : devs));
        for (int k = 0; k < LOCAL_N; k++) {
            int count = -1, user = -1;
            CHECK(comms[k] != NULL, "ncclCommInitAll: comm %d is NULL", k);
            NCCLCHECK(ncclCommCount(comms[k], &count));
            NCCLCHECK(ncclCommUserRank(comms[k], &user));
            CHECK(count == LOCAL_N && user == k, "ncclCommInitAll comm %d: rank %d of %d", k,
                  user, count);
            if (pass == 1) {
                int dev = -1;
                NCCLCHECK(ncclCommCuDevice(comms[k], &dev));
                CHECK(dev == devs[k], "ncclCommInitAll devlist[%d] = %d but ncclCommCuDevice "
                      "says %d", k, devs[k], dev);
            }
        }
        /* One thread drives every communicator through a group. */
        int64_t in[LOCAL_N], out[LOCAL_N];
        NCCLCHECK(ncclGroupStart());
        for (int k = 0; k < LOCAL_N; k++) {
            in[k] = 10 * (k + 1);
            out[k] = -1;
            NCCLCHECK(ncclAllReduce(&in[k], &out[k], 1, ncclInt64, ncclSum, comms[k], STREAM));
        }
        NCCLCHECK(ncclGroupEnd());
        for (int k = 0; k < LOCAL_N; k++)
            CHECK(out[k] == 60, "ncclCommInitAll group all-reduce on comm %d: %lld", k,
                  (long long)out[k]);
        /* One thread per communicator. */
        pthread_t th[LOCAL_N];
        thread_arg_t args[LOCAL_N];
        for (int k = 0; k < LOCAL_N; k++) {
            args[k] = (thread_arg_t){comms[k], k, -1, ncclInternalError};
            CHECK(pthread_create(&th[k], NULL, thread_body, &args[k]) == 0, "pthread_create");
        }
        for (int k = 0; k < LOCAL_N; k++) {
            pthread_join(th[k], NULL);
            CHECK(args[k].status == ncclSuccess && args[k].result == 6,
                  "ncclCommInitAll thread %d: status %d, result %lld", k, (int)args[k].status,
                  (long long)args[k].result);
        }
        for (int k = 0; k < LOCAL_N; k++) NCCLCHECK(ncclCommDestroy(comms[k]));
    }
}

static void test_memory(ncclComm_t c) {
    const size_t n = (1u << 18) + 3;
    float *buf = NULL;
    NCCLCHECK(ncclMemAlloc((void **)&buf, n * sizeof(float)));
    CHECK(buf != NULL, "ncclMemAlloc returned NULL");
    for (size_t i = 0; i < n; i++) buf[i] = (float)(i % 100);
    void *handle = NULL;
    NCCLCHECK(ncclCommRegister(c, buf, n * sizeof(float), &handle));
    NCCLCHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, c, STREAM));
    for (size_t i = 0; i < n; i++)
        CHECK(buf[i] == (float)(i % 100) * (float)nranks,
              "all-reduce in ncclMemAlloc'd, registered memory: element %zu is %g", i,
              (double)buf[i]);
    NCCLCHECK(ncclCommDeregister(c, handle));

    /* Registering plain malloc'd memory works too. */
    size_t bytes = 3 * 4096 + 5;
    char *m = xmalloc(bytes);
    NCCLCHECK(ncclCommRegister(c, m, bytes, &handle));
    NCCLCHECK(ncclCommDeregister(c, handle));
    free(m);
    NCCLCHECK(ncclMemFree(buf));
}

int main(void) {
    test_init(&rank, &nranks);
    double t0 = now_s();
    test_version();
    if (rank == 0) test_unique_ids();
    ncclComm_t world = init_comm("world");
    test_queries(world);
    check_allreduce(world, rank + 1, (int64_t)nranks * (nranks + 1) / 2, "world");
    test_config_init();
    test_split(world);
    test_memory(world);
    test_abort();
    test_repeated_init();
    test_init_all();
    check_allreduce(world, 3, 3 * nranks, "world at the end");
    NCCLCHECK(ncclCommFinalize(world));
    NCCLCHECK(ncclCommDestroy(world));
    if (rank == 0) printf("abi_lifecycle: %d ranks, %.2f s\n", nranks, now_s() - t0);
    return 0;
}
