/* Configuration files and flags: values, precedence, clear errors. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "conf.h"

static const pk_conf_key_t keys[] = {
    {"listen", "address to listen on", "127.0.0.1:7000", 0},
    {"db", "store URI", NULL, 0},
    {"foreground", "stay in the foreground", NULL, 1},
};

static const char *write_tmp(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/pk-conf-test-%d.conf", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_defaults_file_and_args(void)
{
    pk_conf_t c;
    pk_conf_init(&c, keys, 3);
    CHECK(strcmp(pk_conf_get(&c, "listen"), "127.0.0.1:7000") == 0);
    CHECK(pk_conf_get(&c, "db") == NULL);
    const char *p = write_tmp("# comment\n\n  db = \"sqlite:/tmp/x.db\"  \nlisten=127.0.0.1:9\n"
                              "foreground = true\n");
    CHECK_EQ_INT(pk_conf_load(&c, p), 0);
    CHECK(strcmp(pk_conf_get(&c, "db"), "sqlite:/tmp/x.db") == 0);
    CHECK(pk_conf_flag(&c, "foreground"));
    char *argv[] = {"kms", "--listen", "127.0.0.1:1", "pos1", "--db=memory:", NULL};
    char *pos[2];
    int np = -1;
    CHECK_EQ_INT(pk_conf_args(&c, 5, argv, pos, 2, &np), 0);
    CHECK_EQ_INT(np, 1);
    CHECK(strcmp(pos[0], "pos1") == 0);
    CHECK(strcmp(pk_conf_get(&c, "listen"), "127.0.0.1:1") == 0);
    CHECK(strcmp(pk_conf_get(&c, "db"), "memory:") == 0);
    remove(p);
}

static void test_command_line_wins_over_later_config(void)
{
    pk_conf_t c;
    pk_conf_init(&c, keys, 3);
    const char *p = write_tmp("listen = 127.0.0.1:5\n");
    char *argv[] = {"kms", "--listen", "127.0.0.1:6", "--config", (char *)p, NULL};
    CHECK_EQ_INT(pk_conf_args(&c, 5, argv, NULL, 0, NULL), 0);
    CHECK(strcmp(pk_conf_get(&c, "listen"), "127.0.0.1:6") == 0);
    remove(p);
}

static void test_errors_name_file_and_line(void)
{
    pk_conf_t c;
    pk_conf_init(&c, keys, 3);
    const char *p = write_tmp("db = x\n\nlistne = y\n");
    CHECK_EQ_INT(pk_conf_load(&c, p), -1);
    CHECK(strstr(c.err, ":3: unknown key 'listne' (known: listen, db, foreground)") != NULL);

    pk_conf_init(&c, keys, 3);
    p = write_tmp("db x\n");
    CHECK_EQ_INT(pk_conf_load(&c, p), -1);
    CHECK(strstr(c.err, ":1: expected 'key = value'") != NULL);

    pk_conf_init(&c, keys, 3);
    p = write_tmp("db = a\ndb = b\n");
    CHECK_EQ_INT(pk_conf_load(&c, p), -1);
    CHECK(strstr(c.err, ":2: 'db' given twice") != NULL);

    pk_conf_init(&c, keys, 3);
    p = write_tmp("foreground = maybe\n");
    CHECK_EQ_INT(pk_conf_load(&c, p), -1);
    CHECK(strstr(c.err, "takes true or false") != NULL);
    remove(p);

    /* A NUL byte inside a line is an error, not a silently shortened value. */
    pk_conf_init(&c, keys, 3);
    {
        FILE *f = fopen(p, "w");
        fwrite("db = ab\0cd\n", 1, 11, f);
        fclose(f);
    }
    CHECK_EQ_INT(pk_conf_load(&c, p), -1);
    CHECK(strstr(c.err, ":1: NUL byte in line") != NULL);
    remove(p);

    pk_conf_init(&c, keys, 3);
    CHECK_EQ_INT(pk_conf_load(&c, "/nonexistent/pk.conf"), -1);
    CHECK(strstr(c.err, "cannot open") != NULL);
}

static void test_arg_errors(void)
{
    pk_conf_t c;
    char *pos[1];
    int np;
    pk_conf_init(&c, keys, 3);
    char *a1[] = {"x", "--nope", NULL};
    CHECK_EQ_INT(pk_conf_args(&c, 2, a1, pos, 1, &np), -1);
    CHECK(strstr(c.err, "unknown option '--nope'") != NULL);
    char *a2[] = {"x", "--db", NULL};
    CHECK_EQ_INT(pk_conf_args(&c, 2, a2, pos, 1, &np), -1);
    CHECK(strstr(c.err, "--db needs a value") != NULL);
    char *a3[] = {"x", "a", "b", NULL};
    CHECK_EQ_INT(pk_conf_args(&c, 3, a3, pos, 1, &np), -1);
    CHECK(strstr(c.err, "unexpected argument 'b'") != NULL);
    char *a4[] = {"x", "-q", NULL};
    CHECK_EQ_INT(pk_conf_args(&c, 2, a4, pos, 1, &np), -1);
    char *a5[] = {"x", "--foreground=1", NULL};
    CHECK_EQ_INT(pk_conf_args(&c, 2, a5, pos, 1, &np), -1);
    /* An error echoes the argument on one line, control characters hidden. */
    char *a6[] = {"x", "--evil\nlevel=error", NULL};
    CHECK_EQ_INT(pk_conf_args(&c, 2, a6, pos, 1, &np), -1);
    CHECK(strchr(c.err, '\n') == NULL);
    CHECK(strstr(c.err, "unknown option '--evil?level'") != NULL);
}

int main(void)
{
    RUN(test_defaults_file_and_args);
    RUN(test_command_line_wins_over_later_config);
    RUN(test_errors_name_file_and_line);
    RUN(test_arg_errors);
    return check_report();
}
