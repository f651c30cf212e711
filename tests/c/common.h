/*
 * Shared helpers for the C ABI tests of libnccl.so (crate oxccl-nccl).
 *
 * Every test program is one process of an N-process job started by
 * tests/c/runner.c, which sets RANK, NRANKS and OXCCL_TEST_ID_FILE. Rank 0
 * creates each ncclUniqueId and publishes it in a file (written to a
 * temporary name, then renamed, so readers never see half of it); the other
 * ranks poll for that file until a deadline.
 *
 * The programs compile against our header (bindings/c/include/nccl.h) and,
 * unchanged, against NVIDIA's nccl.h: they use only the documented NCCL API.
 * Buffers are host memory and the stream argument is always NULL.
 *
 * Failure reporting: every check prints "FAIL file:line [rank r] message"
 * on stderr and exits with status 1.
 *
 * Environment: RANK, NRANKS, OXCCL_TEST_ID_FILE (from the runner);
 * OXCCL_TEST_ID_TIMEOUT, seconds to wait for an id file (default 120);
 * OXCCL_TEST_QUICK=1, smaller messages (abi_collectives under valgrind).
 */
#ifndef OXCCL_TEST_C_COMMON_H
#define OXCCL_TEST_C_COMMON_H

#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <nccl.h>

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define UNUSED_OK __attribute__((unused))

/* The stream argument: ignored by oxccl, a null stream for NVIDIA's API. */
#define STREAM ((cudaStream_t)0)

static int t_rank UNUSED_OK = -1;   /* this process's rank, for messages */
static int t_nranks UNUSED_OK = 0;

/* Prints "FAIL file:line [rank r] message" in one write (ranks share stderr). */
__attribute__((noreturn, format(printf, 3, 4), unused)) static void
fail_at(const char *file, int line, const char *fmt, ...) {
    char msg[2048];
    int k = snprintf(msg, sizeof msg, "FAIL %s:%d [rank %d] ", file, line, t_rank);
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < sizeof msg) vsnprintf(msg + k, sizeof msg - (size_t)k, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    if (n + 1 < sizeof msg) msg[n++] = '\n';
    if (write(2, msg, n) < 0) { /* nothing more to do */
    }
    exit(1);
}

#define FAIL(...) fail_at(__FILE__, __LINE__, __VA_ARGS__)

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) FAIL(__VA_ARGS__);                                   \
    } while (0)

/* The call must return ncclSuccess. */
#define NCCLCHECK(call)                                                   \
    do {                                                                  \
        ncclResult_t r_ = (call);                                         \
        if (r_ != ncclSuccess) {                                          \
            const char *l_ = ncclGetLastError(NULL);                      \
            FAIL("%s returned %d (%s); ncclGetLastError: %s", #call,      \
                 (int)r_, ncclGetErrorString(r_), l_ ? l_ : "(null)");    \
        }                                                                 \
    } while (0)

/* The call must return exactly `want`. */
#define EXPECT_RESULT(call, want)                                         \
    do {                                                                  \
        ncclResult_t r_ = (call);                                         \
        if (r_ != (want))                                                 \
            FAIL("%s returned %d (%s), expected %d (%s)", #call, (int)r_, \
                 ncclGetErrorString(r_), (int)(want),                     \
                 ncclGetErrorString(want));                               \
    } while (0)

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline int env_int(const char *name) {
    const char *v = getenv(name);
    char *end = NULL;
    if (v == NULL || *v == '\0') FAIL("environment variable %s is not set", name);
    long x = strtol(v, &end, 10);
    if (*end != '\0' || x < 0 || x > 4096) FAIL("%s=%s is not a small integer", name, v);
    return (int)x;
}

/* Seconds a rank waits for rank 0's id file (valgrind makes startup slow). */
static inline double id_deadline_s(void) {
    const char *v = getenv("OXCCL_TEST_ID_TIMEOUT");
    return v ? atof(v) : 120.0;
}

/* Reads RANK and NRANKS (set by the runner) into t_rank / t_nranks. */
static inline void test_init(int *rank, int *nranks) {
    t_rank = env_int("RANK");
    t_nranks = env_int("NRANKS");
    CHECK(t_nranks >= 1 && t_rank < t_nranks, "RANK=%d NRANKS=%d", t_rank, t_nranks);
    setvbuf(stdout, NULL, _IOLBF, 0);
    *rank = t_rank;
    *nranks = t_nranks;
}

/*
 * Distributes one ncclUniqueId: rank 0 calls ncclGetUniqueId and writes it
 * to "$OXCCL_TEST_ID_FILE.<tag>"; every other rank waits for that file. Use a
 * distinct tag for every communicator a program creates.
 */
static inline void exchange_id(ncclUniqueId *id, const char *tag) {
    const char *base = getenv("OXCCL_TEST_ID_FILE");
    char path[4096], tmp[4200];
    if (base == NULL || *base == '\0') FAIL("OXCCL_TEST_ID_FILE is not set");
    snprintf(path, sizeof path, "%s.%s", base, tag);
    if (t_rank == 0) {
        NCCLCHECK(ncclGetUniqueId(id));
        snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "wb");
        CHECK(f != NULL, "cannot create %s: %s", tmp, strerror(errno));
        CHECK(fwrite(id, sizeof *id, 1, f) == 1, "short write to %s", tmp);
        CHECK(fclose(f) == 0, "close %s: %s", tmp, strerror(errno));
        CHECK(rename(tmp, path) == 0, "rename %s -> %s: %s", tmp, path, strerror(errno));
        return;
    }
    double deadline = now_s() + id_deadline_s();
    for (;;) {
        FILE *f = fopen(path, "rb");
        if (f != NULL) {
            size_t got = fread(id, sizeof *id, 1, f);
            fclose(f);
            CHECK(got == 1, "id file %s is shorter than %zu bytes", path, sizeof *id);
            return;
        }
        CHECK(now_s() < deadline, "no id file %s after %.0f s", path, id_deadline_s());
        sleep_ms(2);
    }
}

/* Creates a blocking communicator of all ranks from a fresh id. */
static inline ncclComm_t init_comm(const char *tag) {
    ncclUniqueId id;
    ncclComm_t comm = NULL;
    exchange_id(&id, tag);
    NCCLCHECK(ncclCommInitRank(&comm, t_nranks, id, t_rank));
    CHECK(comm != NULL, "ncclCommInitRank succeeded but returned a NULL comm");
    return comm;
}

/* ---- Datatypes: element access through doubles --------------------------
 * Test values are small integers (and quarters, for averages), which every
 * type below holds exactly (8-bit floats get smaller ones), so the reference is computed in double and
 * compared with ==. Half and bfloat16 are handled as raw bit patterns.
 */

static inline uint16_t f32_to_f16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    int exp = (int)((x >> 23) & 0xff);
    uint32_t man = x & 0x7fffffu;
    if (exp == 0 && man == 0) return sign;
    /* Only normal values that fit exactly are used by the tests. */
    int e = exp - 127 + 15;
    if (e <= 0 || e >= 31) FAIL("value %g does not fit in a normal half", (double)f);
    return (uint16_t)(sign | (uint16_t)(e << 10) | (uint16_t)(man >> 13));
}

static inline float f16_bits_to_f32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t exp = ((uint32_t)h >> 10) & 0x1f;
    uint32_t man = (uint32_t)h & 0x3ffu;
    uint32_t x;
    if (exp == 0 && man == 0) {
        x = sign;
    } else if (exp == 0) { /* subnormal */
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    } else if (exp == 31) {
        x = sign | 0x7f800000u | (man << 13);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline uint16_t f32_to_bf16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)(x >> 16); /* exact for the test values */
}

static inline float bf16_bits_to_f32(uint16_t b) {
    uint32_t x = (uint32_t)b << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* 8-bit floats (NCCL 2.24 and later): 4 or 5 exponent bits, 3 or 2 mantissa bits. Only
 * values they hold exactly are used, and those are normal: encoded from frexp. */
#if NCCL_VERSION_CODE >= 22400
#define HAVE_FP8 1
static inline uint8_t fp8_bits(double v, int mbits, int bias) {
    if (v == 0) return 0;
    uint8_t sign = v < 0 ? 0x80 : 0;
    int e;
    double m = frexp(fabs(v), &e); /* |v| = m * 2^e, m in [0.5, 1) */
    double frac = (2 * m - 1) * (1 << mbits);
    int ef = e - 1 + bias;
    if (frac != floor(frac) || ef <= 0 || ef >= (1 << (7 - mbits)))
        FAIL("value %g is not a normal %s", v, mbits == 3 ? "f8e4m3" : "f8e5m2");
    return (uint8_t)(sign | (ef << mbits) | (int)frac);
}

static inline double fp8_value(uint8_t b, int mbits, int bias) {
    int ef = (b & 0x7f) >> mbits, frac = b & ((1 << mbits) - 1);
    double v = ef == 0 ? ldexp(frac, 1 - bias - mbits)
                       : ldexp(1.0 + (double)frac / (1 << mbits), ef - bias);
    return b & 0x80 ? -v : v;
}
#endif

typedef struct {
    ncclDataType_t type;
    const char *name;
    size_t size;
    int is_signed; /* holds negative values */
    int is_float;  /* ncclAvg is checked only for floating types */
} dtype_t;

static const dtype_t DTYPES[] UNUSED_OK = {
    {ncclInt8, "int8", 1, 1, 0},       {ncclUint8, "uint8", 1, 0, 0},
    {ncclInt32, "int32", 4, 1, 0},     {ncclUint32, "uint32", 4, 0, 0},
    {ncclInt64, "int64", 8, 1, 0},     {ncclUint64, "uint64", 8, 0, 0},
    {ncclFloat16, "float16", 2, 1, 1}, {ncclFloat32, "float32", 4, 1, 1},
    {ncclFloat64, "float64", 8, 1, 1}, {ncclBfloat16, "bfloat16", 2, 1, 1},
#ifdef HAVE_FP8
    {ncclFloat8e4m3, "f8e4m3", 1, 1, 1}, {ncclFloat8e5m2, "f8e5m2", 1, 1, 1},
#endif
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

static inline void put(const dtype_t *t, void *buf, size_t i, double v) {
    switch (t->type) {
    case ncclInt8: ((int8_t *)buf)[i] = (int8_t)v; break;
    case ncclUint8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
    case ncclInt32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case ncclUint32: ((uint32_t *)buf)[i] = (uint32_t)v; break;
    case ncclInt64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case ncclUint64: ((uint64_t *)buf)[i] = (uint64_t)v; break;
    case ncclFloat16: ((uint16_t *)buf)[i] = f32_to_f16_bits((float)v); break;
    case ncclFloat32: ((float *)buf)[i] = (float)v; break;
    case ncclFloat64: ((double *)buf)[i] = v; break;
    case ncclBfloat16: ((uint16_t *)buf)[i] = f32_to_bf16_bits((float)v); break;
#ifdef HAVE_FP8
    case ncclFloat8e4m3: ((uint8_t *)buf)[i] = fp8_bits(v, 3, 7); break;
    case ncclFloat8e5m2: ((uint8_t *)buf)[i] = fp8_bits(v, 2, 15); break;
#endif
    default: FAIL("put: unexpected datatype %d", (int)t->type);
    }
}

static inline double get(const dtype_t *t, const void *buf, size_t i) {
    switch (t->type) {
    case ncclInt8: return ((const int8_t *)buf)[i];
    case ncclUint8: return ((const uint8_t *)buf)[i];
    case ncclInt32: return ((const int32_t *)buf)[i];
    case ncclUint32: return ((const uint32_t *)buf)[i];
    case ncclInt64: return (double)((const int64_t *)buf)[i];
    case ncclUint64: return (double)((const uint64_t *)buf)[i];
    case ncclFloat16: return f16_bits_to_f32(((const uint16_t *)buf)[i]);
    case ncclFloat32: return ((const float *)buf)[i];
    case ncclFloat64: return ((const double *)buf)[i];
    case ncclBfloat16: return bf16_bits_to_f32(((const uint16_t *)buf)[i]);
#ifdef HAVE_FP8
    case ncclFloat8e4m3: return fp8_value(((const uint8_t *)buf)[i], 3, 7);
    case ncclFloat8e5m2: return fp8_value(((const uint8_t *)buf)[i], 2, 15);
#endif
    default: FAIL("get: unexpected datatype %d", (int)t->type);
    }
}

/*
 * The input of `rank` at element i: signed types take values in
 * {-2,-1,1,2,3}, unsigned ones in {1,2,3}, so that products over 4 ranks
 * (at most 81 in magnitude) and sums fit every type exactly. `salt`
 * varies the pattern between tests.
 */
static inline double input_value(const dtype_t *t, int rank, size_t i, int salt) {
    static const double sv[5] = {-2, -1, 1, 2, 3};
    size_t k = (size_t)rank * 7u + i * 3u + (size_t)salt * 11u;
    /* 8-bit floats hold integers exactly only up to 8 (e5m2): +-1, whose sums over 4
     * ranks, and their quarters, are exact. */
    if (t->size == 1 && t->is_float) return k % 3 == 1 ? -1 : 1;
    return t->is_signed ? sv[k % 5] : (double)(1 + k % 3);
}

/*
 * Values for collectives that move data without reducing it: spread over a
 * range each type holds exactly, so a misplaced block shows up.
 */
static inline double move_value(const dtype_t *t, int rank, size_t i, int salt) {
    size_t m;
    switch (t->type) {
    case ncclInt8: m = 127; break;
    case ncclUint8: m = 251; break;
    case ncclBfloat16: m = 251; break;
    case ncclFloat16: m = 2039; break;
#ifdef HAVE_FP8
    case ncclFloat8e4m3: m = 17; break; /* 0..16 */
    case ncclFloat8e5m2: m = 9; break;  /* 0..8 */
#endif
    default: m = 1000003; break;
    }
    return (double)(((size_t)rank * 7919u + i * 13u + (size_t)salt * 101u) % m);
}

static inline void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1); /* zeroed: no compiler sees uninitialized input */
    CHECK(p != NULL, "out of memory (%zu bytes)", n);
    return p;
}

/* Fills buf with a byte pattern that no check expects ("poison"). */
static inline void poison(void *buf, size_t bytes) { memset(buf, 0x5a, bytes); }

static inline const char *op_name(ncclRedOp_t op) {
    switch ((int)op) {
    case ncclSum: return "sum";
    case ncclProd: return "prod";
    case ncclMax: return "max";
    case ncclMin: return "min";
    case ncclAvg: return "avg";
    default: return "user-op";
    }
}

/* One step of the reference reduction (ncclAvg sums; see reduced_input). */
static inline double combine(ncclRedOp_t op, double acc, double v) {
    switch ((int)op) {
    case ncclSum:
    case ncclAvg: return acc + v;
    case ncclProd: return acc * v;
    case ncclMax: return v > acc ? v : acc;
    case ncclMin: return v < acc ? v : acc;
    default: FAIL("combine: unexpected op %d", (int)op);
    }
}

/* Reference for element i of reducing input_value over all ranks. */
static inline double reduced_input(const dtype_t *t, ncclRedOp_t op, size_t i, int salt) {
    double acc = input_value(t, 0, i, salt);
    for (int r = 1; r < t_nranks; r++) acc = combine(op, acc, input_value(t, r, i, salt));
    return (int)op == ncclAvg ? acc / t_nranks : acc;
}

/* Checks that elements [0, count) of buf equal want_expr (a function of i);
 * the remaining arguments (printf style) say which test this is. */
#define CHECK_ELEMENTS(t, buf, count, want_expr, ...)                          \
    do {                                                                       \
        for (size_t i = 0; i < (count); i++) {                                 \
            double got_ = get((t), (buf), i), want_ = (want_expr);             \
            if (got_ != want_) {                                               \
                char ctx_[512];                                                \
                snprintf(ctx_, sizeof ctx_, __VA_ARGS__);                      \
                fail_at(__FILE__, __LINE__, "%s: element %zu is %g, expected %g", \
                        ctx_, i, got_, want_);                                 \
            }                                                                  \
        }                                                                      \
    } while (0)

#endif /* OXCCL_TEST_C_COMMON_H */
