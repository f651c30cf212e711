/*
 * mpi_perf: times Open MPI collectives the way nccl-tests times NCCL's, and writes the same
 * JSON as oxccl-perf -J, so bench/peers/compare.py can put them side by side.
 *
 *   mpicc -O2 -o mpi_perf mpi_perf.c
 *   mpirun --allow-run-as-root --oversubscribe -np 4 ./mpi_perf all_reduce -b 8 -e 64M -f 4 -J out.json
 *
 * Collectives: all_reduce (MPI_Allreduce), all_gather (MPI_Allgather), reduce_scatter
 * (MPI_Reduce_scatter_block), broadcast (MPI_Bcast), reduce (MPI_Reduce), alltoall
 * (MPI_Alltoall). float, sum. In-place uses MPI_IN_PLACE; MPI_Bcast has a single buffer, so
 * broadcast has only an in-place result (out_of_place is null).
 *
 * Method (nccl-tests' src/common.cu): -w warm-up iterations of every size (factor 2 from -b to
 * -e), then for every size and for out-of-place then in-place: one untimed call, a barrier,
 * -n timed calls, time = elapsed / n, averaged over ranks; algbw = size / time, busbw = algbw *
 * nccl-tests' factor. Then (-c 1) the buffers are filled with integer-valued floats, the
 * collective runs once more and every element is compared with the exact expected value;
 * #wrong is summed over ranks. "size" and "count" are nccl-tests' columns: size =
 * max(send bytes, receive bytes) of one rank, count = the count argument of the call.
 */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum coll { ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, BROADCAST, REDUCE, ALLTOALL, NCOLL };
static const char *coll_names[NCOLL] = {"all_reduce", "all_gather", "reduce_scatter",
                                        "broadcast",  "reduce",     "alltoall"};

static int rank, nranks, root = 0;
static enum coll coll;

/* Input element i of rank r: small integers, so any sum over ranks is exact in float. */
static inline float pat(int r, size_t i) { return (float)((int)((i * 7 + (size_t)r * 13) % 31) - 15); }

struct shape {
  size_t count;      /* count argument (nccl-tests' paramcount) */
  size_t sendcount;  /* elements in the send buffer of one rank */
  size_t recvcount;  /* elements in the receive buffer of one rank */
};

static struct shape shape_of(size_t bytes) {
  size_t n = bytes / sizeof(float), base;
  struct shape s;
  switch (coll) {
    case ALL_GATHER:
      base = (n / nranks) & ~(size_t)3;
      s.count = base; s.sendcount = base; s.recvcount = base * nranks; break;
    case REDUCE_SCATTER:
      base = (n / nranks) & ~(size_t)3;
      s.count = base; s.sendcount = base * nranks; s.recvcount = base; break;
    case ALLTOALL:
      base = (n / nranks) & ~(size_t)3;
      s.count = base; s.sendcount = base * nranks; s.recvcount = base * nranks; break;
    default:
      s.count = n; s.sendcount = n; s.recvcount = n; break;
  }
  return s;
}

static double busbw_factor(void) {
  switch (coll) {
    case ALL_REDUCE: return 2.0 * (nranks - 1) / nranks;
    case ALL_GATHER: case REDUCE_SCATTER: case ALLTOALL: return (double)(nranks - 1) / nranks;
    default: return 1.0;
  }
}

static int has_out_of_place(void) { return coll != BROADCAST; }

static float *sendbuf, *recvbuf;

static void run(const struct shape *s, int in_place) {
  int c = (int)s->count;
  switch (coll) {
    case ALL_REDUCE:
      MPI_Allreduce(in_place ? MPI_IN_PLACE : sendbuf, recvbuf, c, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      break;
    case ALL_GATHER:
      if (in_place)
        MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recvbuf, c, MPI_FLOAT, MPI_COMM_WORLD);
      else
        MPI_Allgather(sendbuf, c, MPI_FLOAT, recvbuf, c, MPI_FLOAT, MPI_COMM_WORLD);
      break;
    case REDUCE_SCATTER:
      MPI_Reduce_scatter_block(in_place ? MPI_IN_PLACE : sendbuf, recvbuf, c, MPI_FLOAT, MPI_SUM,
                               MPI_COMM_WORLD);
      break;
    case BROADCAST:
      MPI_Bcast(recvbuf, c, MPI_FLOAT, root, MPI_COMM_WORLD);
      break;
    case REDUCE:
      if (in_place)
        MPI_Reduce(rank == root ? MPI_IN_PLACE : recvbuf, recvbuf, c, MPI_FLOAT, MPI_SUM, root,
                   MPI_COMM_WORLD);
      else
        MPI_Reduce(sendbuf, recvbuf, c, MPI_FLOAT, MPI_SUM, root, MPI_COMM_WORLD);
      break;
    case ALLTOALL:
      if (in_place)
        MPI_Alltoall(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recvbuf, c, MPI_FLOAT, MPI_COMM_WORLD);
      else
        MPI_Alltoall(sendbuf, c, MPI_FLOAT, recvbuf, c, MPI_FLOAT, MPI_COMM_WORLD);
      break;
    default: break;
  }
}

/* Fills the buffers for one checked call. In-place inputs sit where MPI_IN_PLACE reads them. */
static void init_data(const struct shape *s, int in_place) {
  size_t c = s->count, i, j;
  for (i = 0; i < s->recvcount; i++) recvbuf[i] = -1e9f; /* never a valid result */
  switch (coll) {
    case ALL_REDUCE: case REDUCE:
      for (i = 0; i < c; i++) (in_place ? recvbuf : sendbuf)[i] = pat(rank, i);
      break;
    case ALL_GATHER:
      for (i = 0; i < c; i++) (in_place ? recvbuf + (size_t)rank * c : sendbuf)[i] = pat(rank, i);
      break;
    case REDUCE_SCATTER: case ALLTOALL:
      for (i = 0; i < s->sendcount; i++) (in_place ? recvbuf : sendbuf)[i] = pat(rank, i);
      break;
    case BROADCAST:
      if (rank == root) for (i = 0; i < c; i++) recvbuf[i] = pat(root, i);
      break;
    default: break;
  }
  (void)j;
}

static long long check_data(const struct shape *s) {
  size_t c = s->count, i, j;
  long long wrong = 0;
  float want;
  int r;
  switch (coll) {
    case ALL_REDUCE: case REDUCE:
      if (coll == REDUCE && rank != root) break;
      for (i = 0; i < c; i++) {
        want = 0;
        for (r = 0; r < nranks; r++) want += pat(r, i);
        wrong += recvbuf[i] != want;
      }
      break;
    case ALL_GATHER:
      for (j = 0; j < (size_t)nranks; j++)
        for (i = 0; i < c; i++) wrong += recvbuf[j * c + i] != pat((int)j, i);
      break;
    case REDUCE_SCATTER: /* out-of-place and MPI_IN_PLACE both leave the result at recvbuf[0..c) */
      for (i = 0; i < c; i++) {
        want = 0;
        for (r = 0; r < nranks; r++) want += pat(r, (size_t)rank * c + i);
        wrong += recvbuf[i] != want;
      }
      break;
    case ALLTOALL: /* block j came from rank j, which sent its block `rank` */
      for (j = 0; j < (size_t)nranks; j++)
        for (i = 0; i < c; i++) wrong += recvbuf[j * c + i] != pat((int)j, (size_t)rank * c + i);
      break;
    case BROADCAST:
      for (i = 0; i < c; i++) wrong += recvbuf[i] != pat(root, i);
      break;
    default: break;
  }
  return wrong;
}

struct result { int valid; double time_us, algbw, busbw; long long wrong; int checked; };

static struct result bench(const struct shape *s, int in_place, int iters, int check) {
  struct result res = {0};
  double t0, dt, sum;
  long long wrong = 0, total = 0;
  int i;
  if (!in_place && !has_out_of_place()) return res;
  if (check) init_data(s, in_place);
  run(s, in_place); /* nccl-tests' untimed "Sync" call */
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = MPI_Wtime();
  for (i = 0; i < iters; i++) run(s, in_place);
  dt = (MPI_Wtime() - t0) / iters;
  MPI_Allreduce(&dt, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  dt = sum / nranks; /* nccl-tests -a 1: mean over ranks */
  res.valid = 1;
  res.time_us = dt * 1e6;
  {
    size_t bytes = s->count * sizeof(float);
    if (coll == ALL_GATHER || coll == REDUCE_SCATTER || coll == ALLTOALL) bytes *= (size_t)nranks;
    res.algbw = dt > 0 ? (double)bytes / 1e9 / dt : 0;
    res.busbw = res.algbw * busbw_factor();
  }
  if (check) {
    init_data(s, in_place);
    run(s, in_place);
    wrong = check_data(s);
    MPI_Allreduce(&wrong, &total, 1, MPI_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    res.wrong = total;
    res.checked = 1;
  }
  return res;
}

static size_t parse_size(const char *s) {
  char *end;
  double v = strtod(s, &end);
  switch (*end) {
    case 'K': case 'k': v *= 1024; break;
    case 'M': case 'm': v *= 1024 * 1024; break;
    case 'G': case 'g': v *= 1024.0 * 1024 * 1024; break;
    default: break;
  }
  return (size_t)v;
}

static void usage(void) {
  if (rank == 0)
    fprintf(stderr,
            "usage: mpi_perf COLLECTIVE [-b minbytes] [-e maxbytes] [-f stepfactor] [-n iters]\n"
            "                [-w warmup_iters] [-c 0|1 check] [-r root] [-J file.json]\n"
            "COLLECTIVE: all_reduce all_gather reduce_scatter broadcast reduce alltoall\n");
}

static void json_result(FILE *f, const struct result *r) {
  if (!r->valid) { fprintf(f, "null"); return; }
  fprintf(f, "{\"time\": %.6g, \"alg_bw\": %.6g, \"bus_bw\": %.6g, \"nwrong\": ", r->time_us, r->algbw, r->busbw);
  if (r->checked) fprintf(f, "%lld}", r->wrong); else fprintf(f, "null}");
}

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
    else fputc(*s, f);
  }
  fputc('"', f);
}

static void print_result(const struct result *r) {
  if (!r->valid) { printf("  %8s %7s %7s %6s", "n/a", "n/a", "n/a", "n/a"); return; }
  printf("  %8.2f %7.2f %7.2f ", r->time_us, r->algbw, r->busbw);
  if (r->checked) printf("%6lld", r->wrong); else printf("%6s", "N/A");
}

int main(int argc, char **argv) {
  size_t minbytes = 8, maxbytes = 64 << 20, size;
  double factor = 2;
  int iters = 20, warmup = 1, check = 1, i, c;
  const char *json = NULL;
  char library[128], host[256] = "", date[64], command[2048];
  int nresults = 0;
  struct { size_t size, count; struct result oop, ip; } *results = NULL;

  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);

  if (argc < 2) { usage(); MPI_Finalize(); return 2; }
  for (c = 0; c < NCOLL; c++) {
    const char *a = argv[1];
    size_t l = strlen(coll_names[c]);
    /* also accept nccl-tests' binary names: all_reduce_perf, alltoall_perf, ... */
    if (strcmp(a, coll_names[c]) == 0 || (strncmp(a, coll_names[c], l) == 0 && strcmp(a + l, "_perf") == 0)) break;
  }
  if (c == NCOLL) { usage(); MPI_Finalize(); return 2; }
  coll = (enum coll)c;
  for (i = 2; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) { usage(); MPI_Finalize(); return 2; }
    if (!strcmp(a, "-b")) minbytes = parse_size(v);
    else if (!strcmp(a, "-e")) maxbytes = parse_size(v);
    else if (!strcmp(a, "-f")) factor = strtod(v, NULL);
    else if (!strcmp(a, "-n")) iters = atoi(v);
    else if (!strcmp(a, "-w")) warmup = atoi(v);
    else if (!strcmp(a, "-c")) check = atoi(v);
    else if (!strcmp(a, "-r")) root = atoi(v);
    else if (!strcmp(a, "-J")) json = v;
    else { usage(); MPI_Finalize(); return 2; }
    i++;
  }
  if (factor < 2 || iters < 1 || minbytes > maxbytes || root < 0 || root >= nranks) { usage(); MPI_Finalize(); return 2; }
  if (coll != BROADCAST && coll != REDUCE) root = -1;

  {
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len;
#ifdef OMPI_MAJOR_VERSION
    snprintf(library, sizeof library, "Open MPI %d.%d.%d", OMPI_MAJOR_VERSION, OMPI_MINOR_VERSION, OMPI_RELEASE_VERSION);
#else
    MPI_Get_library_version(v, &len);
    v[strcspn(v, ",\n")] = 0;
    snprintf(library, sizeof library, "%s", v);
#endif
    (void)v; (void)len;
  }
  gethostname(host, sizeof host - 1);
  {
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    size_t off = (size_t)snprintf(command, sizeof command, "mpirun -np %d", nranks);
    for (i = 0; i < argc && off < sizeof command; i++)
      off += (size_t)snprintf(command + off, sizeof command - off, " %s", argv[i]);
  }

  sendbuf = aligned_alloc(64, (maxbytes / 64 + 1) * 64);
  recvbuf = aligned_alloc(64, (maxbytes / 64 + 1) * 64);
  if (!sendbuf || !recvbuf) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
  memset(sendbuf, 0, maxbytes);
  memset(recvbuf, 0, maxbytes);

  if (rank == 0) {
    printf("# mpi_perf %s: %s, %d ranks on %s, %d iters, %d warmup, check %d\n", coll_names[coll], library,
           nranks, host, iters, warmup, check);
    printf("#\n#%84s%33s\n", "out-of-place", "in-place");
    printf("# %10s  %12s  %8s  %6s  %6s  %8s %7s %7s %6s  %8s %7s %7s %6s\n", "size", "count", "type", "redop",
           "root", "time", "algbw", "busbw", "#wrong", "time", "algbw", "busbw", "#wrong");
    printf("# %10s  %12s  %8s  %6s  %6s  %8s %7s %7s %6s  %8s %7s %7s %6s\n", "(B)", "(elements)", "", "", "",
           "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "");
    fflush(stdout);
  }

  /* nccl-tests' warm-up: every size from -b to -e by a factor 2, warmup calls each */
  for (size = minbytes; size <= maxbytes; size *= 2) {
    struct shape s = shape_of(size);
    for (i = 0; i < warmup; i++) run(&s, !has_out_of_place());
    if (size == 0) break;
  }

  double bw_sum = 0;
  int bw_n = 0;
  long long errors = 0;
  for (size = minbytes; size <= maxbytes; size = (size_t)(size * factor)) {
    struct shape s = shape_of(size);
    struct result oop = bench(&s, 0, iters, check);
    struct result ip = bench(&s, 1, iters, check);
    size_t bytes = (s.sendcount > s.recvcount ? s.sendcount : s.recvcount) * sizeof(float);
    results = realloc(results, sizeof *results * (nresults + 1));
    results[nresults].size = bytes;
    results[nresults].count = s.count;
    results[nresults].oop = oop;
    results[nresults].ip = ip;
    nresults++;
    if (oop.valid) { bw_sum += oop.busbw; bw_n++; errors += oop.wrong; }
    if (ip.valid) { bw_sum += ip.busbw; bw_n++; errors += ip.wrong; }
    if (rank == 0) {
      printf("  %10zu  %12zu  %8s  %6s  %6d", bytes, s.count, "float",
             coll == ALL_GATHER || coll == BROADCAST || coll == ALLTOALL ? "none" : "sum", root);
      print_result(&oop);
      print_result(&ip);
      printf("\n");
      fflush(stdout);
    }
    if (size == 0) break;
  }
  double avg = bw_n ? bw_sum / bw_n : 0;
  if (rank == 0) {
    printf("# Out of bounds values : %lld %s\n", errors, errors ? "ERROR" : "OK");
    printf("# Avg bus bandwidth    : %g \n#\n", avg);
  }

  if (rank == 0 && json) {
    FILE *f = fopen(json, "w");
    if (!f) { perror(json); MPI_Abort(MPI_COMM_WORLD, 1); }
    fprintf(f, "{\"library\": ");
    json_string(f, library);
    fprintf(f, ", \"collective\": \"%s\", \"nranks\": %d, \"hostname\": ", coll_names[coll], nranks);
    json_string(f, host);
    fprintf(f, ", \"date\": \"%s\", \"command\": ", date);
    json_string(f, command);
    fprintf(f, ",\n \"results\": [");
    for (i = 0; i < nresults; i++) {
      fprintf(f, "%s\n  {\"size\": %zu, \"count\": %zu, \"type\": \"float\", \"redop\": \"%s\", \"root\": %d,\n"
                 "   \"out_of_place\": ",
              i ? "," : "", results[i].size, results[i].count,
              coll == ALL_GATHER || coll == BROADCAST || coll == ALLTOALL ? "none" : "sum", root);
      json_result(f, &results[i].oop);
      fprintf(f, ",\n   \"in_place\": ");
      json_result(f, &results[i].ip);
      fprintf(f, "}");
    }
    fprintf(f, "],\n \"average_bus_bandwidth\": %.6g}\n", avg);
    fclose(f);
  }
  free(results);
  free(sendbuf);
  free(recvbuf);
  MPI_Finalize();
  return errors ? 1 : 0;
}
