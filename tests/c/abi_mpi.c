/*
 * C ABI test under MPI, the way MPI programs set NCCL up: rank and size come
 * from MPI_COMM_WORLD, rank 0's ncclUniqueId reaches the others through
 * MPI_Bcast, then every rank calls ncclCommInitRank. Checks all-reduce (each
 * datatype, sum/max/min/prod, and avg for floating types, in and out of
 * place) and all-gather (each datatype, in and out of place), then a split
 * into even and odd ranks.
 *
 * Build with mpicc; run with `mpirun -n 4 ./abi_mpi` (no runner, no id file).
 */
#include "common.h"

#include <mpi.h>

#define MPICHECK(call)                                                          \
    do {                                                                        \
        int e_ = (call);                                                        \
        if (e_ != MPI_SUCCESS) FAIL("%s failed with MPI error %d", #call, e_);  \
    } while (0)

static ncclComm_t comm;
static int rank, nranks;

static void allreduce_case(const dtype_t *t, ncclRedOp_t op, size_t n, int inplace, int salt) {
    void *send = xmalloc(n * t->size), *recv = inplace ? send : xmalloc(n * t->size);
    for (size_t i = 0; i < n; i++) put(t, send, i, input_value(t, rank, i, salt));
    NCCLCHECK(ncclAllReduce(send, recv, n, t->type, op, comm, STREAM));
    CHECK_ELEMENTS(t, recv, n, reduced_input(t, op, i, salt), "MPI all-reduce %s %s %s",
                   t->name, op_name(op), inplace ? "in place" : "out of place");
    if (!inplace) free(recv);
    free(send);
}

static void allgather_case(const dtype_t *t, size_t n, int inplace, int salt) {
    char *recv = xmalloc(n * t->size * nranks);
    char *send = inplace ? recv + (size_t)rank * n * t->size : xmalloc(n * t->size);
    poison(recv, n * t->size * nranks);
    for (size_t i = 0; i < n; i++) put(t, send, i, move_value(t, rank, i, salt));
    NCCLCHECK(ncclAllGather(send, recv, n, t->type, comm, STREAM));
    CHECK_ELEMENTS(t, recv, n * (size_t)nranks, move_value(t, (int)(i / n), i % n, salt),
                   "MPI all-gather %s %s", t->name, inplace ? "in place" : "out of place");
    if (!inplace) free(send);
    free(recv);
}

int main(int argc, char **argv) {
    MPICHECK(MPI_Init(&argc, &argv));
    MPICHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    MPICHECK(MPI_Comm_size(MPI_COMM_WORLD, &nranks));
    t_rank = rank;
    t_nranks = nranks;

    ncclUniqueId id;
    if (rank == 0) NCCLCHECK(ncclGetUniqueId(&id));
    MPICHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD));
    NCCLCHECK(ncclCommInitRank(&comm, nranks, id, rank));

    const ncclRedOp_t ops[] = {ncclSum, ncclMax, ncclMin, ncclProd, ncclAvg};
    int salt = 0;
    for (size_t d = 0; d < N_DTYPES; d++) {
        const dtype_t *t = &DTYPES[d];
        for (int inplace = 0; inplace < 2; inplace++) {
            for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++)
                if (ops[o] != ncclAvg || t->is_float)
                    allreduce_case(t, ops[o], 1029, inplace, ++salt);
            allgather_case(t, 1029, inplace, ++salt);
        }
    }

    ncclComm_t sub;
    NCCLCHECK(ncclCommSplit(comm, rank % 2, rank, &sub, NULL));
    int64_t one = 1, count = 0;
    NCCLCHECK(ncclAllReduce(&one, &count, 1, ncclInt64, ncclSum, sub, STREAM));
    CHECK(count == (nranks + 1 - rank % 2) / 2, "split: %lld ranks of parity %d",
          (long long)count, rank % 2);
    NCCLCHECK(ncclCommDestroy(sub));

    NCCLCHECK(ncclCommDestroy(comm));
    MPICHECK(MPI_Barrier(MPI_COMM_WORLD));
    if (rank == 0) printf("abi_mpi: %d ranks, %d checks\n", nranks, salt + 1);
    MPICHECK(MPI_Finalize());
    return 0;
}
