/* The keys of [server] and [client]: one table that the parser, the defaults of np_config_new,
 * the tools' flags and --help, and (checked by tests/docs/check-options.py) docs/config.md and
 * the man pages all come from. */
#ifndef NP_CONFIG_KEYS_H
#define NP_CONFIG_KEYS_H

#include <stddef.h>

#include "config.h"

#define NP__KIND_SERVER 1
#define NP__KIND_CLIENT 2
#define NP__KIND_BOTH   3

/* How a key's value is read (config.c, set_key). */
enum np__vtype {
  V_STR,
  V_HOSTPORT,
  V_IPPORT,
  V_DURATION,
  V_COUNT,
  V_PORTS,
  V_LEVEL,
  V_LOG_FORMAT,
  V_CODEC,
  V_BOOL,
  V_FINGERPRINT,
  V_CIDRS,
  V_PORT,
  V_TOKEN_FILE, /* reads the token from a file into token */
  V_SEED_LOCAL, /* client: the line codec's one service, kept as the proxy "seed" */
};

typedef struct np__key {
  const char *name; /* in the INI file */
  int kinds;        /* NP__KIND_* */
  enum np__vtype type;
  size_t offset;    /* in struct np_config */
  size_t size;      /* for strings */
  const char *flag; /* the long option, without its dashes */
  const char *arg;  /* the value's form in --help; NULL: a switch, no value on the command line */
  const char *def;  /* the default as a file would write it, applied by np_config_new; or NULL */
  const char *def_doc; /* what the default is when it is not a value ("the host name"); or NULL */
  const char *help;    /* one sentence for --help */
} np__key;

extern const np__key np__config_keys[];
extern const size_t np__config_nkeys;

/* The key a flag stands for ("trust-on-first-use" is tofu), or NULL. */
const np__key *np__config_key_by_flag(const char *flag);

#endif
