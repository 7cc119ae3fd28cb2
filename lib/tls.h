/* TLS 1.3 between np-client and np-server (docs/security.md): an np_conn over another np_conn,
 * driven through OpenSSL memory BIOs, so chan, join and mux run on it unchanged. */
#ifndef NP_TLS_H
#define NP_TLS_H

#include <stddef.h>

#include "conn.h"
#include "internal.h"

struct np_config;

/* "sha256:" and 32 bytes as colon-separated hex: what `openssl x509 -fingerprint -sha256` prints,
 * with our prefix. */
#define NP_TLS_FP_LEN (7 + 32 * 3)

typedef struct np__tls np__tls;

/* A server context from cfg: tls_cert/tls_key when set, else the identity in the state directory,
 * created on first use (a P-256 key and a self-signed certificate). tls_client_ca turns on client
 * certificates. Returns 0, NP_ECONFIG (the reason logged) or UV_ENOMEM. log is held. */
int np__tls_server_new(uv_loop_t *loop, const struct np_config *cfg, const np__logger *log,
                       np__tls **out);
/* A client context: pinned by server_fingerprint, else trusting tls_ca ("system": the system's
 * store, also the default) for the host in cfg->server (or tls_server_name). */
int np__tls_client_new(uv_loop_t *loop, const struct np_config *cfg, const np__logger *log,
                       np__tls **out);
/* A client context for the servers of a cluster (cluster_ca): trusts exactly the certificates
 * ca_file signed, whatever their names (membership is the CA's signature; the route table names
 * addresses), with no known_servers; presents cert and key (PEM files; "": none). 0, NP_ECONFIG
 * (the reason logged) or UV_ENOMEM. */
int np__tls_client_ca_only(uv_loop_t *loop, const char *ca_file, const char *cert, const char *key,
                           const np__logger *log, np__tls **out);
void np__tls_free(np__tls *t);
/* The server's own certificate fingerprint (NP_TLS_FP_LEN + 1 bytes, NUL-terminated). */
const char *np__tls_fingerprint(const np__tls *t);

/* What a server conn answers a peer whose first bytes are not TLS, in that peer's protocol (the
 * session above knows it; TLS does not): writes at most cap bytes (NP_TLS_REFUSAL_MAX) to out from
 * the first bytes the peer sent (buf, len) and returns how many, or 0 or less to send nothing. */
#define NP_TLS_REFUSAL_MAX 1024
typedef int (*np__tls_refusal_cb)(const char *buf, size_t len, unsigned char *out, size_t cap,
                                  void *arg);
void np__tls_set_refusal(np__tls *t, np__tls_refusal_cb cb, void *arg);

/* Wrap inner, which the TLS conn then owns (closing one closes both). A server conn tells a peer
 * that does not speak TLS so, in the peer's own protocol, and reports NP_ENOTLS; its handshake runs
 * when reading starts. A client conn must complete np__tls_handshake before use. */
int np__tls_wrap(np__tls *t, np_conn *inner, np_conn **out);

/* Make a TLS conn on t's loop again from what another conn's move_out took out (np__moved): ssl,
 * its handshake done, and rest, the ciphertext that conn had read but not decrypted (malloc'ed, or
 * NULL), which is read before anything inner reads. On success the conn owns inner, ssl and rest;
 * on failure (UV_ENOMEM) it takes nothing. */
int np__tls_adopt(np__tls *t, np_conn *inner, struct ssl_st *ssl, char *rest, size_t rest_len,
                  np_conn **out);
/* Another server context on loop, logging to log (held), sharing base's SSL_CTX (certificate,
 * key, settings; OpenSSL counts its references thread-safely), so a conn made on one loop can be
 * adopted on another. No refusal callback (np__tls_set_refusal). 0, UV_EINVAL (a client context),
 * UV_ENOMEM. Freed with np__tls_free. */
int np__tls_server_share(const np__tls *base, uv_loop_t *loop, const np__logger *log,
                         np__tls **out);

typedef void (*np__tls_handshake_cb)(np_conn *c, int status, void *data);
/* Client side: run the handshake; cb runs once, later, with 0 or NP_ETLS, NP_ETLSVERIFY, NP_ENOTLS
 * or a transport error (the reason is logged). Reading stops when it returns. */
int np__tls_handshake(np_conn *c, np__tls_handshake_cb cb, void *data);

/* Fingerprints: "sha256:AB:CD:...", with or without the prefix and colons, any case. 0 or
 * NP_ECONFIG. */
/* Key material from c's TLS session (RFC 8446's exporter, label only): the same len bytes on both
 * ends of one connection, known to nobody else. c: a TLS conn after its handshake. 0, or UV_EINVAL
 * for any other conn, NP_ETLS. */
int np__tls_export(np_conn *c, const char *label, unsigned char *out, size_t len);
/* Bytes handed to the inner conn so far, records and handshake: what a write cost on the wire. */
uint64_t np__tls_wire_bytes(np_conn *c);
int np__tls_fingerprint_parse(const char *s, unsigned char out[32]);
void np__tls_fingerprint_format(const unsigned char md[32], char out[NP_TLS_FP_LEN + 1]);

#endif
