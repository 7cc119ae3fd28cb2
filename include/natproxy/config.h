/* Configuration shared by the tools and embedders: INI files (docs/config.md) and the same keys set
 * one by one (what the tools do for command-line flags, after loading the file, so flags win). */
#ifndef NATPROXY_CONFIG_H
#define NATPROXY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <natproxy/common.h>
#include <natproxy/log.h>

NP_BEGIN_DECLS

struct np_config;

/* np_server_drain / np_client_drain: wait as long as the configuration's drain_timeout says. */
#define NP_DRAIN_CONFIGURED UINT64_MAX

typedef enum np_config_kind { NP_CONFIG_SERVER = 1, NP_CONFIG_CLIENT = 2 } np_config_kind;

/* Returns 0 or UV_ENOMEM; *out untouched on failure. Defaults are documented in docs/config.md. */
NP_EXPORT int np_config_new(np_config_kind kind, struct np_config **out);
NP_EXPORT void np_config_free(struct np_config *cfg);
/* Load an INI file. Returns 0, NP_ECONFIG (np_config_error() says "FILE:LINE: what is wrong") or a
 * UV_E* code when the file cannot be read. */
NP_EXPORT int np_config_load_file(struct np_config *cfg, const char *path);
/* Set key in section ("server", "client", or "proxy NAME") as if read from a file. NP_ECONFIG on an
 * unknown key or bad value, with np_config_error() set. */
NP_EXPORT int np_config_set(struct np_config *cfg, const char *section, const char *key,
                            const char *value);
/* Set a command-line flag: "allow-ports" sets allow_ports in [server] (or [client]), "R" adds a
 * proxy as np_config_add_remote does, "local" (client) sets the line codec's service. Same errors
 * as np_config_set. */
NP_EXPORT int np_config_set_flag(struct np_config *cfg, const char *flag, const char *value);
/* Add a TCP proxy from an ssh -R style spec: [BIND_ADDR:]REMOTE_PORT:LOCAL_HOST:LOCAL_PORT. */
NP_EXPORT int np_config_add_remote(struct np_config *cfg, const char *spec);
/* The same for a UDP proxy (np-client -U), named "udp-REMOTE_PORT". */
NP_EXPORT int np_config_add_udp(struct np_config *cfg, const char *spec);
/* A visitor of another client's private proxy (np-client -L): "[BIND_ADDR:]PORT:OWNER.PROXY"
 * listens on BIND_ADDR:PORT (127.0.0.1 unless given) and carries each connection there to the
 * stcp proxy OWNER.PROXY, proven with the [client]'s secret_key. Named "stcp-PORT". */
NP_EXPORT int np_config_add_local(struct np_config *cfg, const char *spec);
/* Check cross-field rules (a client needs a server and at least one proxy, ...). NP_ECONFIG or 0.
 */
NP_EXPORT int np_config_validate(struct np_config *cfg);
/* The last error's text; "" when none. Borrowed until the next call on cfg. */
NP_EXPORT const char *np_config_error(const struct np_config *cfg);
/* A fresh shared secret for token / token_file: 256 random bits as 43 characters of base64url,
 * NUL-terminated, into buf (at least 44 bytes; np-server --gen-token). 0, UV_EINVAL or UV_EIO. */
NP_EXPORT int np_token_generate(char *buf, size_t len);
/* The client's server as it will be dialled, "HOST:PORT" (the default port added); "" when none.
 * Borrowed until the next call on cfg. */
NP_EXPORT const char *np_config_server(const struct np_config *cfg);
/* The configured log level name's value (key log_level). */
NP_EXPORT int np_config_log_level(const struct np_config *cfg);
/* The configured log format (key log_format): NP_LOG_FORMAT_TEXT (the default) or _JSON. */
NP_EXPORT np_log_format np_config_log_format(const struct np_config *cfg);

/* The keys of a kind's section ([server] or [client]), which are also the tools' flags: i from 0
 * gives one name after another, then NULL. The tools build their flags and --help from this, and
 * an embedder can build its own. */
NP_EXPORT const char *np_config_key(np_config_kind kind, size_t i);

typedef enum np_config_attr {
  NP_CONFIG_ATTR_FLAG,         /* its command-line flag without the dashes: "allow-ports" */
  NP_CONFIG_ATTR_ARG,          /* the value's form, "LIST"; NULL for a switch (a flag alone) */
  NP_CONFIG_ATTR_DEFAULT,      /* the default as a file writes it ("10s"), or NULL */
  NP_CONFIG_ATTR_DEFAULT_TEXT, /* the default in words where it is not a value ("the host name"),
                                  else the value; NULL: none */
  NP_CONFIG_ATTR_HELP,         /* a sentence saying what it does */
} np_config_attr;

/* One attribute of a key of kind, borrowed for the life of the library; NULL when the key is not
 * one of kind's or the attribute is absent. */
NP_EXPORT const char *np_config_key_attr(np_config_kind kind, const char *key, np_config_attr attr);

NP_END_DECLS

#endif
