/*
 * Test runner for the C ABI tests: starts N copies of a command as ranks
 * 0..N-1 of one job and waits for them.
 *
 *   runner -n N [-t SECONDS] -- command [args...]
 *
 * Each child gets RANK, NRANKS and OXCCL_TEST_ID_FILE (a path in a fresh
 * temporary directory, through which the ranks share ncclUniqueIds; see
 * common.h). The runner exits 0 when every child exits 0. When a child fails,
 * or the deadline (default 120 s) passes, it kills the others (their process
 * groups) so no rank is left waiting for a dead peer, and exits 1.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RANKS 256

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(void) {
    fprintf(stderr, "usage: runner -n N [-t SECONDS] -- command [args...]\n");
    exit(2);
}

static void remove_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    char path[4096 + 512];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv) {
    int n = 0, argi = 1;
    double timeout = 120.0;
    while (argi < argc && strcmp(argv[argi], "--") != 0) {
        if (strcmp(argv[argi], "-n") == 0 && argi + 1 < argc) {
            n = atoi(argv[argi + 1]);
            argi += 2;
        } else if (strcmp(argv[argi], "-t") == 0 && argi + 1 < argc) {
            timeout = atof(argv[argi + 1]);
            argi += 2;
        } else {
            usage();
        }
    }
    if (argi >= argc - 1 || n < 1 || n > MAX_RANKS || timeout <= 0) usage();
    char **cmd = &argv[argi + 1];

    const char *tmp = getenv("TMPDIR");
    char dir[4096], idfile[4096 + 16], nbuf[16], rbuf[16];
    snprintf(dir, sizeof dir, "%s/oxccl-c-test.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("runner: mkdtemp");
        return 1;
    }
    snprintf(idfile, sizeof idfile, "%s/id", dir);
    snprintf(nbuf, sizeof nbuf, "%d", n);

    pid_t pids[MAX_RANKS];
    int done[MAX_RANKS] = {0};
    for (int r = 0; r < n; r++) {
        pid_t p = fork();
        if (p < 0) {
            perror("runner: fork");
            for (int k = 0; k < r; k++) kill(-pids[k], SIGKILL);
            return 1;
        }
        if (p == 0) {
            setpgid(0, 0); /* own group: killing it takes valgrind's children too */
            snprintf(rbuf, sizeof rbuf, "%d", r);
            setenv("RANK", rbuf, 1);
            setenv("NRANKS", nbuf, 1);
            setenv("OXCCL_TEST_ID_FILE", idfile, 1);
            execvp(cmd[0], cmd);
            fprintf(stderr, "runner: cannot run %s: %s\n", cmd[0], strerror(errno));
            _exit(127);
        }
        setpgid(p, p);
        pids[r] = p;
    }

    double deadline = now_s() + timeout;
    int remaining = n, failed = 0;
    while (remaining > 0) {
        int status;
        pid_t p = waitpid(-1, &status, WNOHANG);
        if (p < 0 && errno != EINTR) break;
        if (p > 0) {
            for (int r = 0; r < n; r++) {
                if (pids[r] != p || done[r]) continue;
                done[r] = 1;
                remaining--;
                int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
                if (!ok && !failed) {
                    if (WIFSIGNALED(status))
                        fprintf(stderr, "runner: rank %d killed by signal %d\n", r,
                                WTERMSIG(status));
                    else
                        fprintf(stderr, "runner: rank %d exited with status %d\n", r,
                                WEXITSTATUS(status));
                    failed = 1;
                    /* Give the other ranks a moment to report their own view. */
                    deadline = now_s() + 5.0 < deadline ? now_s() + 5.0 : deadline;
                }
            }
            continue;
        }
        if (now_s() > deadline) {
            if (!failed)
                fprintf(stderr, "runner: timed out after %.0f s; killing the ranks\n",
                        timeout);
            else
                fprintf(stderr, "runner: killing the remaining ranks\n");
            for (int r = 0; r < n; r++)
                if (!done[r]) {
                    fprintf(stderr, "runner: rank %d still running, killed\n", r);
                    kill(-pids[r], SIGKILL);
                }
            failed = 1;
            while (remaining > 0) {
                pid_t q = waitpid(-1, &status, 0);
                if (q < 0) break;
                remaining--;
            }
            break;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    remove_dir(dir);
    return failed ? 1 : 0;
}
