/*
 * The role subcommands linked into proxkey. Each entry is
 * {name, function, one-line summary}; see cli.h for the contract.
 *
 * A role's shell library defines PK_HAVE_<ROLE> for the proxkey target when
 * src/CMakeLists.txt links it (see there), so a role is listed exactly when
 * it is built.
 */
#ifndef PK_SRC_COMMANDS_H
#define PK_SRC_COMMANDS_H

int pk_bench_main(int argc, char **argv);
int pk_cmd_bench(int argc, char **argv);
int pk_cmd_ca(int argc, char **argv);

#ifdef PK_HAVE_KMS
int pk_cmd_kms(int argc, char **argv);
#define PK_CMD_KMS                                                                                 \
    {"kms", pk_cmd_kms, "key management server: devices, allowed pairs, root keys, pools"},
#else
#define PK_CMD_KMS
#endif

#ifdef PK_HAVE_NODE
int pk_cmd_node(int argc, char **argv);
#define PK_CMD_NODE                                                                                \
    {"node", pk_cmd_node, "serving node: registers devices, distributes keys, authorizes links"},
#else
#define PK_CMD_NODE
#endif

#ifdef PK_HAVE_GTS
int pk_cmd_gts(int argc, char **argv);
int pk_cmd_device_poll(int argc, char **argv);
int pk_demo_trigger(int argc, char **argv);
#define PK_CMD_GTS {"gts", pk_cmd_gts, "trigger server: answers device polls with commands"},
#define PK_DEMO_TRIGGER                                                                            \
    {"trigger", pk_demo_trigger, "a trigger server, devices polling, commands delivered"},
#else
#define PK_CMD_GTS
#define PK_DEMO_TRIGGER
#endif

#ifdef PK_HAVE_DEVICE
int pk_cmd_device(int argc, char **argv);
#define PK_CMD_DEVICE                                                                              \
    {"device", pk_cmd_device, "device side: register, keys, direct links, trigger polls"},
#else
#define PK_CMD_DEVICE
#endif

#ifdef PK_HAVE_SIM
int pk_cmd_sim(int argc, char **argv);
#define PK_CMD_SIM {"sim", pk_cmd_sim, "deterministic simulator: many devices, loss, crashes"},
#else
#define PK_CMD_SIM
#endif

#define PK_COMMANDS                                                                                \
    PK_CMD_KMS PK_CMD_NODE PK_CMD_GTS PK_CMD_DEVICE{                                               \
        "ca", pk_cmd_ca, "development CA: make the CA and the kms/node certificates"},             \
        PK_CMD_SIM

#if defined(PK_HAVE_KMS) && defined(PK_HAVE_NODE) && defined(PK_HAVE_DEVICE)
int pk_demo_root_keys(int argc, char **argv);
#define PK_DEMO_ROOT_KEYS                                                                          \
    {"root-keys", pk_demo_root_keys,                                                               \
     "kms, two nodes, four devices: option 1 and 2 links across nodes"},
#else
#define PK_DEMO_ROOT_KEYS
#endif

#if defined(PK_HAVE_KMS) && defined(PK_HAVE_NODE) && defined(PK_HAVE_DEVICE)
int pk_demo_master_keys(int argc, char **argv);
#define PK_DEMO_MASTER_KEYS                                                                        \
    {"master-keys", pk_demo_master_keys,                                                           \
     "kms, node, three clients: master keys, individual keys, rotation cascade"},
#else
#define PK_DEMO_MASTER_KEYS
#endif

/* Extra demo scenarios: {name, fn, summary}, */
#define PK_DEMOS PK_DEMO_TRIGGER PK_DEMO_ROOT_KEYS PK_DEMO_MASTER_KEYS

#endif
