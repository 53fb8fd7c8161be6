/* Child processes for the system benchmarks (childproc.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "childproc.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int pk_child_pin(pid_t pid, int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(pid, sizeof set, &set);
}

pid_t pk_child_spawn(const char *log, int cpu, char *const argv[])
{
    pid_t pid = fork();
    if (pid != 0)
        return pid < 0 ? -1 : pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    if (cpu >= 0)
        (void)pk_child_pin(0, cpu);
    execv("/proc/self/exe", argv);
    _exit(127);
}

int pk_child_run(const char *log, char *const argv[])
{
    int st = 0;
    pid_t pid = pk_child_spawn(log, -1, argv);
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void pk_child_stop(pid_t *pid)
{
    if (*pid <= 0)
        return;
    kill(*pid, SIGTERM);
    for (int i = 0; i < 100; i++) { /* 5 s, then SIGKILL */
        if (waitpid(*pid, NULL, WNOHANG) == *pid) {
            *pid = 0;
            return;
        }
        usleep(50000);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

double pk_child_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int pk_child_wait_line(const char *file, const char *pat, char *line, size_t cap, unsigned ms)
{
    for (unsigned t = 0; t < ms; t += 20) {
        FILE *f = fopen(file, "r");
        if (f) {
            char buf[1024];
            while (fgets(buf, sizeof buf, f)) {
                if (strstr(buf, pat)) {
                    if (line)
                        snprintf(line, cap, "%s", buf);
                    fclose(f);
                    return 0;
                }
            }
            fclose(f);
        }
        usleep(20000);
    }
    return -1;
}

static int cmp_d(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

void pk_child_sort(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_d);
}

double pk_child_median(double *v, unsigned n)
{
    pk_child_sort(v, n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void pk_child_loadavg(char *b, size_t cap)
{
    FILE *f = fopen("/proc/loadavg", "r");
    b[0] = '\0';
    if (f) {
        if (fgets(b, (int)cap, f))
            b[strcspn(b, "\n")] = '\0';
        fclose(f);
    }
}
