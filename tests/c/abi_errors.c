/*
 * C ABI test: error reporting.
 *
 *  - ncclGetErrorString: a distinct, non-empty string for every result code
 *    and a non-NULL one for an unknown code;
 *  - argument errors (NULL communicator, datatype 99, an unknown reduction
 *    op, roots and peers out of range, NULL buffers with count > 0, NULL
 *    output pointers, bad ranks and sizes at init, an uninitialized config,
 *    misuse of PreMulSum ops) return ncclInvalidArgument, leave a non-empty
 *    ncclGetLastError, and leave the communicator usable: every rank makes
 *    the same bad calls, and a real collective follows each batch.
 */
#include "common.h"

static ncclComm_t comm;
static int rank, nranks;

/* The call must fail with ncclInvalidArgument and leave a message. */
#define EXPECT_INVALID(call)                                                   \
    do {                                                                       \
        EXPECT_RESULT(call, ncclInvalidArgument);                              \
        const char *m1_ = ncclGetLastError(comm), *m2_ = ncclGetLastError(NULL); \
        CHECK(m1_ != NULL && *m1_ != '\0', "%s: ncclGetLastError(comm) is empty", #call); \
        CHECK(m2_ != NULL && *m2_ != '\0', "%s: ncclGetLastError(NULL) is empty", #call); \
    } while (0)

static int64_t round_no;

/* A real all-reduce: the communicator still works after the bad calls. */
static void still_works(const char *after) {
    int64_t x = ++round_no + rank, y = -1;
    NCCLCHECK(ncclAllReduce(&x, &y, 1, ncclInt64, ncclSum, comm, STREAM));
    int64_t want = round_no * nranks + (int64_t)nranks * (nranks - 1) / 2;
    CHECK(y == want, "all-reduce after %s: %lld, expected %lld", after, (long long)y,
          (long long)want);
}

static void test_error_strings(void) {
    const char *s[ncclNumResults];
    for (int r = 0; r < (int)ncclNumResults; r++) {
        s[r] = ncclGetErrorString((ncclResult_t)r);
        CHECK(s[r] != NULL && *s[r] != '\0', "ncclGetErrorString(%d) is empty", r);
        CHECK(strcmp(s[r], pncclGetErrorString((ncclResult_t)r)) == 0,
              "pncclGetErrorString(%d) differs", r);
        for (int q = 0; q < r; q++)
            CHECK(strcmp(s[q], s[r]) != 0, "ncclGetErrorString(%d) == (%d): \"%s\"", q, r,
                  s[r]);
    }
    CHECK(ncclGetErrorString((ncclResult_t)99) != NULL, "ncclGetErrorString(99) is NULL");
}

static void test_collective_arguments(void) {
    float a[8] = {0}, b[8 * 256] = {0};
    const ncclDataType_t bad_type = (ncclDataType_t)99;
    const ncclRedOp_t bad_op = (ncclRedOp_t)77;

    EXPECT_INVALID(ncclAllReduce(a, b, 4, ncclFloat32, ncclSum, NULL, STREAM));
    EXPECT_INVALID(ncclBroadcast(a, b, 4, ncclFloat32, 0, NULL, STREAM));
    EXPECT_INVALID(ncclSend(a, 4, ncclFloat32, 0, NULL, STREAM));
    EXPECT_INVALID(ncclRecv(b, 4, ncclFloat32, 0, NULL, STREAM));
    still_works("NULL communicators");

    EXPECT_INVALID(ncclAllReduce(a, b, 4, bad_type, ncclSum, comm, STREAM));
    EXPECT_INVALID(ncclAllGather(a, b, 4, bad_type, comm, STREAM));
    EXPECT_INVALID(ncclBcast(a, 4, bad_type, 0, comm, STREAM));
    EXPECT_INVALID(ncclSend(a, 4, bad_type, 0, comm, STREAM));
    EXPECT_INVALID(ncclAllReduce(a, b, 4, ncclFloat32, bad_op, comm, STREAM));
    EXPECT_INVALID(ncclReduce(a, b, 4, ncclFloat32, bad_op, 0, comm, STREAM));
    EXPECT_INVALID(ncclReduceScatter(a, b, 4, ncclFloat32, bad_op, comm, STREAM));
    still_works("bad datatypes and ops");

    EXPECT_INVALID(ncclBroadcast(a, b, 4, ncclFloat32, nranks, comm, STREAM));
    EXPECT_INVALID(ncclBroadcast(a, b, 4, ncclFloat32, -1, comm, STREAM));
    EXPECT_INVALID(ncclBcast(a, 4, ncclFloat32, nranks, comm, STREAM));
    EXPECT_INVALID(ncclReduce(a, b, 4, ncclFloat32, ncclSum, nranks, comm, STREAM));
    EXPECT_INVALID(ncclGather(a, b, 4, ncclFloat32, nranks + 3, comm, STREAM));
    EXPECT_INVALID(ncclScatter(b, a, 4, ncclFloat32, -1, comm, STREAM));
    EXPECT_INVALID(ncclSend(a, 4, ncclFloat32, nranks, comm, STREAM));
    EXPECT_INVALID(ncclRecv(b, 4, ncclFloat32, -1, comm, STREAM));
    still_works("roots and peers out of range");

    EXPECT_INVALID(ncclAllReduce(NULL, b, 4, ncclFloat32, ncclSum, comm, STREAM));
    EXPECT_INVALID(ncclAllReduce(a, NULL, 4, ncclFloat32, ncclSum, comm, STREAM));
    EXPECT_INVALID(ncclAllGather(a, NULL, 4, ncclFloat32, comm, STREAM));
    EXPECT_INVALID(ncclReduceScatter(NULL, b, 1, ncclFloat32, ncclSum, comm, STREAM));
    EXPECT_INVALID(ncclAlltoAll(a, NULL, 1, ncclFloat32, comm, STREAM));
    EXPECT_INVALID(ncclBcast(NULL, 4, ncclFloat32, 0, comm, STREAM));
    EXPECT_INVALID(ncclSend(NULL, 4, ncclFloat32, (rank + 1) % nranks, comm, STREAM));
    EXPECT_INVALID(ncclRecv(NULL, 4, ncclFloat32, (rank + 1) % nranks, comm, STREAM));
    still_works("NULL buffers");

    /* The same mistakes inside a group fail at the call; the group stays balanced. */
    NCCLCHECK(ncclGroupStart());
    EXPECT_INVALID(ncclAllReduce(a, b, 4, bad_type, ncclSum, comm, STREAM));
    EXPECT_INVALID(ncclBroadcast(a, b, 4, ncclFloat32, nranks, comm, STREAM));
    ncclResult_t end = ncclGroupEnd();
    CHECK(end == ncclSuccess || end == ncclInvalidArgument,
          "ncclGroupEnd after failed calls in the group returned %d (%s)", (int)end,
          ncclGetErrorString(end));
    still_works("bad calls inside a group");
}

static void test_query_arguments(void) {
    int n = 0;
    ncclUniqueId id;
    ncclComm_t c = NULL;
    memset(&id, 0, sizeof id);
    EXPECT_INVALID(ncclGetVersion(NULL));
    EXPECT_INVALID(ncclGetUniqueId(NULL));
    EXPECT_INVALID(ncclCommCount(NULL, &n));
    EXPECT_INVALID(ncclCommCount(comm, NULL));
    EXPECT_INVALID(ncclCommUserRank(comm, NULL));
    EXPECT_INVALID(ncclCommCuDevice(NULL, &n));
    EXPECT_INVALID(ncclCommGetAsyncError(comm, NULL));
    EXPECT_INVALID(ncclCommInitRank(NULL, nranks, id, rank));
    EXPECT_INVALID(ncclCommInitRank(&c, nranks, id, nranks));
    EXPECT_INVALID(ncclCommInitRank(&c, nranks, id, -1));
    EXPECT_INVALID(ncclCommInitRank(&c, 0, id, 0));
    EXPECT_INVALID(ncclCommInitAll(NULL, 2, NULL));
    EXPECT_INVALID(ncclCommInitAll(&c, 0, NULL));
    ncclConfig_t zeroed;
    memset(&zeroed, 0, sizeof zeroed);
    EXPECT_INVALID(ncclCommInitRankConfig(&c, nranks, id, rank, &zeroed));
    EXPECT_INVALID(ncclCommSplit(comm, 0, 0, NULL, NULL));
    void *handle = NULL;
    EXPECT_INVALID(ncclCommRegister(comm, NULL, 64, &handle));
    EXPECT_INVALID(ncclCommRegister(comm, &n, sizeof n, NULL));
    still_works("bad query and init arguments");
}

static void test_redop_arguments(void) {
    float s = 2.0f, x[4] = {1, 2, 3, 4};
    double y[4] = {0};
    ncclRedOp_t op;
    EXPECT_INVALID(ncclRedOpCreatePreMulSum(NULL, &s, ncclFloat32, ncclScalarHostImmediate, comm));
    EXPECT_INVALID(ncclRedOpCreatePreMulSum(&op, NULL, ncclFloat32, ncclScalarHostImmediate, comm));
    EXPECT_INVALID(ncclRedOpCreatePreMulSum(&op, &s, (ncclDataType_t)99,
                                            ncclScalarHostImmediate, comm));
    EXPECT_INVALID(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate, NULL));
    EXPECT_INVALID(ncclRedOpDestroy(ncclSum, comm));

    NCCLCHECK(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate, comm));
    /* The op was made for float32: using it with float64 is an error. */
    EXPECT_INVALID(ncclAllReduce(x, y, 4, ncclFloat64, op, comm, STREAM));
    float z[4];
    NCCLCHECK(ncclAllReduce(x, z, 4, ncclFloat32, op, comm, STREAM));
    CHECK(z[3] == 8.0f * (float)nranks, "PreMulSum after the misuse: %g", (double)z[3]);
    NCCLCHECK(ncclRedOpDestroy(op, comm));
    EXPECT_INVALID(ncclRedOpDestroy(op, comm)); /* twice */
    EXPECT_INVALID(ncclAllReduce(x, z, 4, ncclFloat32, op, comm, STREAM)); /* destroyed */
    still_works("PreMulSum misuse");
}

int main(void) {
    test_init(&rank, &nranks);
    double t0 = now_s();
    test_error_strings();
    comm = init_comm("errors");
    still_works("init");
    test_collective_arguments();
    test_query_arguments();
    test_redop_arguments();
    NCCLCHECK(ncclCommDestroy(comm));
    if (rank == 0) printf("abi_errors: %d ranks, %.2f s\n", nranks, now_s() - t0);
    return 0;
}
