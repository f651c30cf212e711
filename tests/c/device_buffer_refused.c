/*
 * GPU check (scripts/device-check.sh): a device buffer passed to oxccl's libnccl.so.2,
 * which takes host buffers, is refused with ncclInvalidArgument and a message saying it is
 * GPU memory, instead of being read as host memory. One rank; the CUDA driver is opened with
 * dlopen, so no CUDA header or toolkit is needed to build this.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include "nccl.h"

typedef int (*cu_init_t)(unsigned);
typedef int (*cu_device_get_t)(int *, int);
typedef int (*cu_ctx_create_t)(void **, unsigned, int);
typedef int (*cu_mem_alloc_t)(unsigned long long *, size_t);

int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) {
        fprintf(stderr, "FAIL: no CUDA driver: %s\n", dlerror());
        return 1;
    }
    cu_init_t cu_init = (cu_init_t)dlsym(cuda, "cuInit");
    cu_device_get_t cu_device_get = (cu_device_get_t)dlsym(cuda, "cuDeviceGet");
    cu_ctx_create_t cu_ctx_create = (cu_ctx_create_t)dlsym(cuda, "cuCtxCreate_v2");
    cu_mem_alloc_t cu_mem_alloc = (cu_mem_alloc_t)dlsym(cuda, "cuMemAlloc_v2");
    int dev;
    void *ctx;
    unsigned long long dptr;
    if (!cu_init || !cu_device_get || !cu_ctx_create || !cu_mem_alloc || cu_init(0) ||
        cu_device_get(&dev, 0) || cu_ctx_create(&ctx, 0, dev) || cu_mem_alloc(&dptr, 4096)) {
        fprintf(stderr, "FAIL: could not allocate GPU memory through the driver\n");
        return 1;
    }
    ncclUniqueId id;
    ncclComm_t comm;
    if (ncclGetUniqueId(&id) != ncclSuccess || ncclCommInitRank(&comm, 1, id, 0) != ncclSuccess) {
        fprintf(stderr, "FAIL: one-rank communicator: %s\n", ncclGetLastError(NULL));
        return 1;
    }
    ncclResult_t r = ncclAllReduce((void *)dptr, (void *)dptr, 16, ncclFloat, ncclSum, comm, NULL);
    const char *msg = ncclGetLastError(comm);
    printf("ncclAllReduce on a device buffer: %s: %s\n", ncclGetErrorString(r), msg);
    int ok = r == ncclInvalidArgument && strstr(msg, "GPU memory") != NULL;
    float host[16] = {1};
    ok = ok && ncclAllReduce(host, host, 16, ncclFloat, ncclSum, comm, NULL) == ncclSuccess;
    ncclCommDestroy(comm);
    printf("%s\n", ok ? "ok: device buffer refused, host buffer still works" : "FAIL");
    return ok ? 0 : 1;
}
