/*
 * The role subcommands linked into proxkey. Each entry is
 * {name, function, one-line summary}; see cli.h for the contract.
 */
#ifndef PK_SRC_COMMANDS_H
#define PK_SRC_COMMANDS_H

int pk_bench_main(int argc, char **argv);

#define PK_COMMANDS
/* Extra demo scenarios: {name, fn, summary}, */
#define PK_DEMOS

#endif
