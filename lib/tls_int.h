/* The TLS module's insides, shared by its two files and nothing else (not installed): tls.c, the
 * conns, and tls_ctx.c, the contexts they are made from. The layouts live here because a conn reads
 * its context's settings (make_ssl, the failure reports) and the context's verify callback fills in
 * the conn's verdict; ssl_err is static inline so that tls.c calls into tls_ctx.c and never the
 * other way round (tests/check-layers.py fails on a cycle). */
#ifndef NP_TLS_INT_H
#define NP_TLS_INT_H

#include "tls.h"

#include <stdio.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

struct np__tls {
  SSL_CTX *ctx;
  uv_loop_t *loop;
  const np__logger *log;
  np__tls_refusal_cb refusal;
  void *refusal_arg;
  int server;
  int pinned;
  int ca_only; /* client: np__tls_client_ca_only's, which checks no name and sends no SNI */
  unsigned char pin[32];
  /* client: the known_servers file ("": none) and this server's line name in it; tofu: record a
   * server it does not name yet (trust on first use) */
  char known[1024];
  char known_key[264];
  int tofu;
  char host[256]; /* client: the name checked against a CA-signed certificate, and sent as SNI */
  char fingerprint[NP_TLS_FP_LEN + 1];
};

/* A client conn's view of the server's certificate: filled in by the verify callback (tls_ctx.c),
 * which finds it as the SSL's app data, and read by the conn (tls.c) to report a failure. */
struct np__tls_verdict;
/* After a client's handshake that trusted a server on first use: record its certificate in
 * known_servers. 0, or an error with the verdict's verify_err set (the connection must fail: an
 * unrecorded certificate would be trusted anew next time). */
int np__tls_known_commit(np__tls *t, struct np__tls_verdict *v);

struct np__tls_verdict {
  unsigned char seen[32]; /* the certificate the server presented */
  unsigned seen_set : 1, verify_failed : 1, pinned_mismatch : 1;
  unsigned known_mismatch : 1; /* known_servers records another fingerprint, at known_line */
  unsigned tofu_pending : 1;   /* a first use, recorded once the handshake proved the key */
  int known_line;
  unsigned char known_fp[32];
  char verify_err[400];
};

/* Log why a conn's handshake failed, from its verdict and OpenSSL's error queue (which it clears);
 * peer names the conn. */
void np__tls_report_failure(const np__tls *t, const struct np__tls_verdict *v, const char *peer);

static inline void ssl_err(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  if (e != 0)
    ERR_error_string_n(e, buf, len);
  else
    snprintf(buf, len, "unknown error");
  ERR_clear_error();
}

#endif
