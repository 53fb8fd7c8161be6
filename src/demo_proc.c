/* The child processes of the demo scenarios (demo_proc.h). */
#include "demo_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The children, global so the signal handler can reach them. */
static volatile pid_t children[PK_DEMO_MAX_CHILD];

void pk_demo_signal_all(int sig)
{
    for (int i = 0; i < PK_DEMO_MAX_CHILD; i++)
        if (children[i] > 0) {
            kill(children[i], SIGCONT);
            kill(children[i], sig);
        }
}

static void on_signal(int sig)
{
    pk_demo_signal_all(SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

void pk_demo_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int pk_demo_setup(pk_demo_t *d, const char *tmpl)
{
    ssize_t n = readlink("/proc/self/exe", d->exe, sizeof d->exe - 1);
    if (n <= 0) {
        fprintf(stderr, "demo: cannot find this executable: %s\n", strerror(errno));
        return -1;
    }
    d->exe[n] = '\0';
    snprintf(d->dir, sizeof d->dir, "%s", tmpl);
    if (!mkdtemp(d->dir)) {
        fprintf(stderr, "demo: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    return 0;
}

static int track(pid_t p)
{
    for (int i = 0; i < PK_DEMO_MAX_CHILD; i++)
        if (children[i] <= 0) {
            children[i] = p;
            return 0;
        }
    return -1;
}

static void untrack(pid_t p)
{
    for (int i = 0; i < PK_DEMO_MAX_CHILD; i++)
        if (children[i] == p)
            children[i] = 0;
}

static pid_t spawn(const pk_demo_t *d, const char *out, char *const argv[])
{
    fflush(stdout); /* a child must not inherit buffered output */
    pid_t p = fork();
    if (p != 0)
        return p;
    int o = -1, e = d->err_fd;
    if (chdir(d->dir) != 0 ||
        (o = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0 ||
        (e < 0 && (e = open("errors.log", O_WRONLY | O_CREAT | O_APPEND, 0600)) < 0) ||
        dup2(o, 1) < 0 || dup2(e, 2) < 0)
        _exit(127);
    close(o);
    if (d->trace)
        setenv("PROXKEY_TRACE", "1", 1);
    execv(d->exe, argv);
    _exit(127);
}

int pk_demo_wait(pid_t p, long ms)
{
    for (long t = 0; t <= ms; t += 10) {
        int st;
        pid_t r = waitpid(p, &st, WNOHANG);
        if (r == p) {
            untrack(p);
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (r < 0) {
            untrack(p);
            return -1;
        }
        pk_demo_sleep_ms(10);
    }
    kill(p, SIGKILL);
    (void)waitpid(p, NULL, 0);
    untrack(p);
    return -2;
}

int pk_demo_exited(pid_t p)
{
    int st;
    if (waitpid(p, &st, WNOHANG) != p)
        return 0;
    untrack(p);
    return 1;
}

pid_t pk_demo_start(const pk_demo_t *d, const char *out, char *const argv[])
{
    pid_t p = spawn(d, out, argv);
    if (p > 0 && track(p) != 0) {
        kill(p, SIGKILL);
        (void)waitpid(p, NULL, 0);
        return -1;
    }
    return p;
}

int pk_demo_run(const pk_demo_t *d, const char *out, char *const argv[])
{
    pid_t p = pk_demo_start(d, out, argv);
    if (p < 0)
        return -1;
    return pk_demo_wait(p, d->run_ms);
}

void pk_demo_stop_all(void)
{
    pk_demo_signal_all(SIGTERM);
    for (int i = 0; i < PK_DEMO_MAX_CHILD; i++)
        if (children[i] > 0 && pk_demo_wait(children[i], 3000) == -2)
            fprintf(stderr, "demo: a child did not stop on SIGTERM (killed)\n");
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

void pk_demo_finish(const pk_demo_t *d, int keep)
{
    pk_demo_stop_all();
    if (keep)
        printf("(working directory kept: %s)\n", d->dir);
    else
        nftw(d->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int pk_demo_read_file(const pk_demo_t *d, const char *name, char *buf, size_t cap)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", d->dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    return 0;
}

unsigned pk_demo_free_port(int type)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    unsigned port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}
