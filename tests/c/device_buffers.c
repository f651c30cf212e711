/*
 * GPU check (scripts/device-check.sh): oxccl's libnccl.so.2 on device buffers, NRANKS
 * processes sharing GPU 0, each op ordered on a non-default CUDA stream.
 *
 *   device_buffers [NRANKS] [COUNT]
 *
 * Checked against values computed here:
 *   - the call returns while its stream is still held by earlier work (a wait on a host
 *     flag the program releases after the call): NCCL's non-blocking stream semantics;
 *   - the op reads what earlier stream work wrote (inputs filled by cuMemsetD32Async) and
 *     later stream work reads its result (cuMemcpyDtoHAsync, then one stream sync);
 *   - all-reduce (sum, out of place and in place), broadcast, reduce, one group of
 *     all-gather + a send/recv ring (fused into one job), then reduce-scatter;
 *   - all-gather and reduce-scatter in place (NCCL's layouts), a broadcast whose other
 *     ranks pass a NULL input, and a group of an all-reduce and an all-gather (with
 *     OXCCL_CUDA_IPC=1, the ops that go through peers' GPU memory, in group order);
 *   - an in-place all-reduce on ncclMemAlloc memory, which must be GPU memory.
 * The CUDA driver is opened with dlopen: no CUDA header or toolkit is needed to build.
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "nccl.h"

typedef unsigned long long dptr_t;
static int (*cu_init)(unsigned);
static int (*cu_device_get)(int *, int);
static int (*cu_primary_retain)(void **, int);
static int (*cu_ctx_set_current)(void *);
static int (*cu_mem_alloc)(dptr_t *, size_t);
static int (*cu_mem_host_alloc)(void **, size_t, unsigned);
static int (*cu_host_get_device_pointer)(dptr_t *, void *, unsigned);
static int (*cu_stream_create)(void **, unsigned);
static int (*cu_stream_sync)(void *);
static int (*cu_memset_d32_async)(dptr_t, unsigned, size_t, void *);
static int (*cu_memcpy_dtoh_async)(void *, dptr_t, size_t, void *);
static int (*cu_stream_wait_value32)(void *, dptr_t, unsigned, unsigned);

#define LOAD(var, name)                                                      \
    do {                                                                     \
        *(void **)&var = dlsym(cuda, name);                                  \
        if (!var) {                                                          \
            fprintf(stderr, "FAIL: libcuda.so.1 has no %s\n", name);         \
            return 1;                                                        \
        }                                                                    \
    } while (0)

#define CU(call)                                                             \
    do {                                                                     \
        int rc_ = (call);                                                    \
        if (rc_) {                                                           \
            fprintf(stderr, "FAIL rank %d: %s = CUDA error %d\n", rank, #call, rc_); \
            return 1;                                                        \
        }                                                                    \
    } while (0)

#define NC(call)                                                             \
    do {                                                                     \
        ncclResult_t r_ = (call);                                            \
        if (r_ != ncclSuccess) {                                             \
            fprintf(stderr, "FAIL rank %d: %s = %s: %s\n", rank, #call,      \
                    ncclGetErrorString(r_), ncclGetLastError(NULL));         \
            return 1;                                                        \
        }                                                                    \
    } while (0)

static int load_cuda(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) {
        fprintf(stderr, "FAIL: no CUDA driver: %s\n", dlerror());
        return 1;
    }
    LOAD(cu_init, "cuInit");
    LOAD(cu_device_get, "cuDeviceGet");
    LOAD(cu_primary_retain, "cuDevicePrimaryCtxRetain");
    LOAD(cu_ctx_set_current, "cuCtxSetCurrent");
    LOAD(cu_mem_alloc, "cuMemAlloc_v2");
    LOAD(cu_mem_host_alloc, "cuMemHostAlloc");
    LOAD(cu_host_get_device_pointer, "cuMemHostGetDevicePointer_v2");
    LOAD(cu_stream_create, "cuStreamCreate");
    LOAD(cu_stream_sync, "cuStreamSynchronize");
    LOAD(cu_memset_d32_async, "cuMemsetD32Async");
    LOAD(cu_memcpy_dtoh_async, "cuMemcpyDtoHAsync_v2");
    LOAD(cu_stream_wait_value32, "cuStreamWaitValue32_v2");
    return 0;
}

/* Fills n 32-bit words at d with v, on the stream. */
static int fill(int rank, dptr_t d, unsigned v, size_t n, void *s) {
    CU(cu_memset_d32_async(d, v, n, s));
    return 0;
}

/* Copies n words back (after everything before on the stream) and checks each equals want. */
static int expect(int rank, const char *what, dptr_t d, size_t n, uint32_t want, void *s) {
    uint32_t *h = malloc(n * 4 + 4);
    CU(cu_memcpy_dtoh_async(h, d, n * 4, s));
    CU(cu_stream_sync(s));
    for (size_t i = 0; i < n; i++) {
        if (h[i] != want) {
            fprintf(stderr, "FAIL rank %d: %s: element %zu is %u, expected %u\n", rank, what, i,
                    h[i], want);
            free(h);
            return 1;
        }
    }
    free(h);
    printf("rank %d: %s ok (%zu elements)\n", rank, what, n);
    return 0;
}

static void on_alarm(int sig) {
    static const char msg[] = "FAIL: ncclAllReduce blocked on its held stream (not stream-ordered)\n";
    (void)sig;
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static int run_rank(int rank, int nranks, size_t count, ncclUniqueId id) {
    int dev;
    void *ctx, *s;
    if (load_cuda()) return 1;
    CU(cu_init(0));
    CU(cu_device_get(&dev, 0));
    CU(cu_primary_retain(&ctx, dev));
    CU(cu_ctx_set_current(ctx));
    CU(cu_stream_create(&s, 1 /* CU_STREAM_NON_BLOCKING */));
    dptr_t a, b, big;
    CU(cu_mem_alloc(&a, count * 4));
    CU(cu_mem_alloc(&b, count * 4));
    CU(cu_mem_alloc(&big, count * 4 * (size_t)nranks));
    ncclComm_t comm;
    NC(ncclCommInitRank(&comm, nranks, id, rank));
    uint32_t n = (uint32_t)nranks, r = (uint32_t)rank;

    /* 0. One un-held call first: the library's one-time set-up (pinned memory, kernels)
     *    then happens here, not while the stream is held below. */
    if (fill(rank, a, 1, count, s)) return 1;
    NC(ncclAllReduce((void *)a, (void *)b, count, ncclUint32, ncclSum, comm, s));
    if (expect(rank, "all-reduce (first call)", b, count, n, s)) return 1;

    /* 1. Non-blocking: hold the stream on a host flag, call, then release. */
    volatile uint32_t *flag;
    dptr_t flag_d;
    CU(cu_mem_host_alloc((void **)&flag, 64, 2 /* DEVICEMAP */));
    CU(cu_host_get_device_pointer(&flag_d, (void *)flag, 0));
    *flag = 0;
    CU(cu_stream_wait_value32(s, flag_d, 1, 0 /* GEQ */));
    if (fill(rank, a, r + 1, count, s)) return 1;
    signal(SIGALRM, on_alarm);
    alarm(60); /* a blocking call would wait for the held stream forever */
    NC(ncclAllReduce((void *)a, (void *)b, count, ncclUint32, ncclSum, comm, s));
    alarm(0);
    printf("rank %d: ncclAllReduce returned while its stream was held\n", rank);
    *flag = 1;
    if (expect(rank, "all-reduce (out of place, after held stream)", b, count, n * (n + 1) / 2, s))
        return 1;

    /* 2. In place, input from the stream's earlier work. */
    if (fill(rank, a, 3 * r, count, s)) return 1;
    NC(ncclAllReduce((void *)a, (void *)a, count, ncclUint32, ncclSum, comm, s));
    if (expect(rank, "all-reduce (in place)", a, count, 3 * n * (n - 1) / 2, s)) return 1;

    /* 3. Broadcast from the last rank; reduce (max) onto rank 0. */
    if (fill(rank, a, 100 + r, count, s)) return 1;
    NC(ncclBroadcast((void *)a, (void *)b, count, ncclUint32, nranks - 1, comm, s));
    if (expect(rank, "broadcast", b, count, 100 + n - 1, s)) return 1;
    if (fill(rank, a, 7 * r + 1, count, s)) return 1;
    if (fill(rank, b, 0xdead, count, s)) return 1;
    NC(ncclReduce((void *)a, (void *)b, count, ncclUint32, ncclMax, 0, comm, s));
    if (expect(rank, "reduce (max) onto rank 0", b, count, rank == 0 ? 7 * (n - 1) + 1 : 0xdead, s))
        return 1;

    /* 4. One group: all-gather into big, then a send/recv ring, then reduce-scatter. */
    if (fill(rank, a, 1000 + r, count, s)) return 1;
    NC(ncclGroupStart());
    NC(ncclAllGather((void *)a, (void *)big, count, ncclUint32, comm, s));
    NC(ncclSend((void *)a, count, ncclUint32, (rank + 1) % nranks, comm, s));
    NC(ncclRecv((void *)b, count, ncclUint32, (rank + nranks - 1) % nranks, comm, s));
    NC(ncclGroupEnd());
    for (int k = 0; k < nranks; k++) {
        char what[64];
        snprintf(what, sizeof what, "grouped all-gather block %d", k);
        if (expect(rank, what, big + (dptr_t)k * count * 4, count, 1000 + k, s)) return 1;
    }
    if (expect(rank, "grouped send/recv ring", b, count, 1000 + (r + n - 1) % n, s)) return 1;
    if (fill(rank, big, r + 1, count * nranks, s)) return 1;
    NC(ncclReduceScatter((void *)big, (void *)a, count, ncclUint32, ncclSum, comm, s));
    if (expect(rank, "reduce-scatter", a, count, n * (n + 1) / 2, s)) return 1;

    /* 5. In place: the all-gather's input is its block of the output, the reduce-scatter's
     *    output its block of the input. */
    dptr_t mine = big + (dptr_t)r * count * 4;
    if (fill(rank, mine, 50 + r, count, s)) return 1;
    NC(ncclAllGather((void *)mine, (void *)big, count, ncclUint32, comm, s));
    for (int k = 0; k < nranks; k++) {
        char what[64];
        snprintf(what, sizeof what, "in-place all-gather block %d", k);
        if (expect(rank, what, big + (dptr_t)k * count * 4, count, 50 + k, s)) return 1;
    }
    if (fill(rank, big, r + 2, count * nranks, s)) return 1;
    NC(ncclReduceScatter((void *)big, (void *)mine, count, ncclUint32, ncclSum, comm, s));
    if (expect(rank, "in-place reduce-scatter", mine, count, n * (n - 1) / 2 + 2 * n, s))
        return 1;
    if (fill(rank, a, 40 + r, count, s)) return 1;
    NC(ncclBroadcast(rank == 0 ? (void *)a : NULL, (void *)b, count, ncclUint32, 0, comm, s));
    if (expect(rank, "broadcast (NULL input off the root)", b, count, 40, s)) return 1;
    if (fill(rank, a, r + 1, count, s)) return 1;
    NC(ncclGroupStart());
    NC(ncclAllReduce((void *)a, (void *)b, count, ncclUint32, ncclMin, comm, s));
    NC(ncclAllGather((void *)a, (void *)big, count, ncclUint32, comm, s));
    NC(ncclGroupEnd());
    if (expect(rank, "grouped all-reduce (min)", b, count, 1, s)) return 1;
    for (int k = 0; k < nranks; k++) {
        char what[64];
        snprintf(what, sizeof what, "grouped all-gather block %d (after all-reduce)", k);
        if (expect(rank, what, big + (dptr_t)k * count * 4, count, k + 1, s)) return 1;
    }

    /* 6. ncclMemAlloc gives GPU memory (the fill below is a device memset). */
    void *m = NULL;
    NC(ncclMemAlloc(&m, count * 4));
    if (fill(rank, (dptr_t)m, 2 * r + 1, count, s)) return 1;
    NC(ncclAllReduce(m, m, count, ncclUint32, ncclSum, comm, s));
    if (expect(rank, "all-reduce on ncclMemAlloc memory", (dptr_t)m, count, n * n, s)) return 1;
    NC(ncclMemFree(m));

    ncclResult_t async;
    NC(ncclCommGetAsyncError(comm, &async));
    if (async != ncclSuccess) {
        fprintf(stderr, "FAIL rank %d: async error %s\n", rank, ncclGetErrorString(async));
        return 1;
    }
    NC(ncclCommDestroy(comm));
    return 0;
}

int main(int argc, char **argv) {
    int nranks = argc > 1 ? atoi(argv[1]) : 2;
    size_t count = argc > 2 ? strtoull(argv[2], NULL, 10) : (1 << 20) + 3;
    int rank = -1;
    if (nranks < 1 || count < 1) {
        fprintf(stderr, "usage: device_buffers [NRANKS >= 1] [COUNT >= 1]\n");
        return 2;
    }
    ncclUniqueId id;
    NC(ncclGetUniqueId(&id));
    /* CUDA is initialised in the children only (a forked CUDA context is unusable). */
    for (int i = 0; i < nranks; i++) {
        pid_t p = fork();
        if (p == 0) _exit(run_rank(i, nranks, count, id));
        if (p < 0) {
            perror("fork");
            return 1;
        }
    }
    int failed = 0;
    for (int i = 0; i < nranks; i++) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
    }
    printf("%s: %d ranks on one GPU, %zu elements\n", failed ? "FAIL" : "ok", nranks, count);
    return failed;
}
