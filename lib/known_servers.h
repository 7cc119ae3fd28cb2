/* The client's known_servers file (trust on first use; docs/security.md). Not installed. */
#ifndef NP_KNOWN_SERVERS_H
#define NP_KNOWN_SERVERS_H

#define NP_KNOWN_LINE_MAX 600 /* "HOST:PORT fingerprint": a DNS name, a port, 95 characters */
#define NP_KNOWN_PATH_MAX 1024

#include <stddef.h>

/* The fingerprint (text, as written: "sha256:AB:...", into fp of len bytes) path's first line for
 * key ("HOST:PORT") records: 1 with fp and *line set, 0 when no line names key (or the file does
 * not exist), or the read error. The caller checks the text is a fingerprint. */
int np__known_lookup(const char *path, const char *key, char *fp, size_t len, int *line);
/* Append "key fp" to path, creating it (0600) and its directories (0700) as needed; *line is the
 * line it went to. 0 or the error. */
int np__known_add(const char *path, const char *key, const char *fp, int *line);

#endif
