/* TLS contexts, one per side: the SSL_CTX and what every conn made from it shares (the server's
 * identity and fingerprint, the client's pin or CA and the host name it checks, the callback that
 * answers a plaintext peer), the client's check of the certificate the server presents, and the
 * fingerprints we print and parse. Kept apart from tls.c, the conns themselves: setting up and
 * checking is one job, moving bytes through OpenSSL another. tls.c calls in here; nothing here
 * calls tls.c. */
#include "tls.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#if defined(__aarch64__)
#include <sys/auxv.h>
#endif
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "known_servers.h"
#include "tls_cert.h"
#include "tls_int.h"

/* ---- fingerprints -------------------------------------------------------------------------- */

void np__tls_fingerprint_format(const unsigned char md[32], char out[NP_TLS_FP_LEN + 1]) {
  static const char hex[] = "0123456789ABCDEF";
  char *p = out + 7;

  memcpy(out, "sha256:", 7);
  for (int i = 0; i < 32; i++) {
    *p++ = hex[md[i] >> 4];
    *p++ = hex[md[i] & 15];
    *p++ = i < 31 ? ':' : '\0';
  }
}

int np__tls_fingerprint_parse(const char *s, unsigned char out[32]) {
  int n = 0, half = -1;

  if (strncasecmp(s, "sha256:", 7) == 0)
    s += 7;
  for (; *s != '\0'; s++) {
    int v;
    if (*s == ':' && half < 0)
      continue;
    if (*s >= '0' && *s <= '9')
      v = *s - '0';
    else if ((*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
      v = (*s | 0x20) - 'a' + 10;
    else
      return NP_ECONFIG;
    if (half < 0) {
      half = v;
      continue;
    }
    if (n == 32)
      return NP_ECONFIG;
    out[n++] = (unsigned char)(half << 4 | v);
    half = -1;
  }
  return n == 32 && half < 0 ? 0 : NP_ECONFIG;
}

static void cert_fp(X509 *x, unsigned char md[32]) {
  unsigned n = 0;
  if (X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32)
    memset(md, 0, 32);
}

/* ---- contexts ------------------------------------------------------------------------------ */

/* TLS 1.3's ciphers, fastest first for this CPU. Both ends are ours, so the strength is the same
 * either way (128-bit keys are TLS 1.3's baseline), and what matters is speed: with AES in
 * hardware AES-128-GCM is the fastest (10 rounds against AES-256's 14; OpenSSL's default puts
 * AES-256 first), without it ChaCha20-Poly1305 is. */
static const char *cipher_order(void) {
  int aes = 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  aes = __builtin_cpu_supports("aes") && __builtin_cpu_supports("pclmul");
#elif defined(__aarch64__) && defined(HWCAP_AES) && defined(HWCAP_PMULL)
  aes = (getauxval(AT_HWCAP) & (HWCAP_AES | HWCAP_PMULL)) == (HWCAP_AES | HWCAP_PMULL);
#endif
  return aes ? "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"
             : "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384";
}

static np__tls *ctx_new(uv_loop_t *loop, const np__logger *log, int server) {
  np__tls *t = calloc(1, sizeof(*t));

  if (t == NULL)
    return NULL;
  t->loop = loop;
  t->log = log;
  t->server = server;
  if ((t->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method())) == NULL) {
    free(t);
    return NULL;
  }
  /* Both ends are ours: nothing older than 1.3 needs to be spoken. */
  SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION);
  /* The client offers the order that is fastest here; the server picks by its own order, but
   * ChaCha20 first when the client puts it first (a client without AES hardware says so). */
  if (SSL_CTX_set_ciphersuites(t->ctx, cipher_order()) != 1) {
    SSL_CTX_free(t->ctx);
    free(t);
    return NULL;
  }
  if (server)
    SSL_CTX_set_options(t->ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
  /* An idle tunnel should not hold 2 x 16 KiB of record buffers. */
  SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS);
  /* No resumption: every connection makes a full handshake, so session tickets would only be
   * issued (server) and kept (client), per connection, for nothing. */
  SSL_CTX_set_num_tickets(t->ctx, 0);
  SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
  return t;
}

static int ctx_fail(np__tls *t, const char *what, const char *path) {
  char e[200];
  ssl_err(e, sizeof(e));
  np__log(t->log, NP_LOG_ERROR, "%s %s: %s", what, path, e);
  np__tls_free(t);
  return NP_ECONFIG;
}

int np__tls_server_new(uv_loop_t *loop, const struct np_config *cfg, const np__logger *log,
                       np__tls **out) {
  char dir[4096], err[600];
  X509 *cert = NULL;
  EVP_PKEY *key = NULL;
  unsigned char md[32];
  int created = 0, r;
  np__tls *t;

  if (cfg->tls_dir[0] != '\0')
    np__strlcpy(dir, cfg->tls_dir, sizeof(dir));
  else if (cfg->tls_cert[0] == '\0' && np__tls_state_dir(dir, sizeof(dir)) != 0) {
    np__log(log, NP_LOG_ERROR, "no state directory for the TLS identity: set tls_dir (--tls-dir)");
    return NP_ECONFIG;
  }
  if ((t = ctx_new(loop, log, 1)) == NULL)
    return UV_ENOMEM;
  if ((r = np__tls_identity(dir, cfg->tls_cert, cfg->tls_key, &cert, &key, &created, err,
                            sizeof(err))) != 0) {
    np__log(log, NP_LOG_ERROR, "%s", err);
    np__tls_free(t);
    return r;
  }
  cert_fp(cert, md);
  np__tls_fingerprint_format(md, t->fingerprint);
  r = SSL_CTX_use_certificate(t->ctx, cert) == 1 && SSL_CTX_use_PrivateKey(t->ctx, key) == 1;
  X509_free(cert);
  EVP_PKEY_free(key);
  /* tls_cert may hold the chain up to its CA (an intermediate of a cluster CA, say): sent whole,
   * the leaf first, as it was loaded above. */
  if (r && cfg->tls_cert[0] != '\0')
    r = SSL_CTX_use_certificate_chain_file(t->ctx, cfg->tls_cert) == 1;
  if (!r)
    return ctx_fail(t, "cannot use the TLS identity in", cfg->tls_cert[0] ? cfg->tls_cert : dir);
  if (created)
    np__log(log, NP_LOG_INFO, "created a TLS key and self-signed certificate in %s", dir);
  if (cfg->tls_client_ca[0] != '\0') {
    if (SSL_CTX_load_verify_locations(t->ctx, cfg->tls_client_ca, NULL) != 1)
      return ctx_fail(t, "cannot load the client CA", cfg->tls_client_ca);
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  }
  *out = t;
  return 0;
}

/* The known_servers file: 1 trusted (it records this fingerprint; or, on first use, the CA vouches
 * for the server, or its certificate is to be recorded when the handshake is done), 0 refused (it
 * records another one, or it cannot be read), -1 it says nothing of this server and trust on first
 * use is off (the CA decides). */
static int verify_known(np__tls *t, struct np__tls_verdict *v, X509_STORE_CTX *xs) {
  char was[NP_TLS_FP_LEN + 1];
  int line = 0, r;

  if (t->known[0] == '\0')
    return -1;
  if ((r = np__known_lookup(t->known, t->known_key, was, sizeof(was), &line)) == 1) {
    if (np__tls_fingerprint_parse(was, v->known_fp) != 0) {
      snprintf(v->verify_err, sizeof(v->verify_err), "%.60s:%d is not a fingerprint", t->known,
               line);
      return 0;
    }
    if (CRYPTO_memcmp(v->seen, v->known_fp, 32) == 0)
      return 1;
    v->known_mismatch = 1;
    v->known_line = line;
    return 0;
  }
  if (r < 0) {
    snprintf(v->verify_err, sizeof(v->verify_err), "cannot read %.60s: %s", t->known,
             np_strerror(r));
    return 0;
  }
  if (!t->tofu)
    return -1;
  /* A server whose certificate chains to a trusted CA is checked by its CA, not pinned: its
   * renewals must keep working. */
  if (X509_verify_cert(xs) == 1)
    return 1;
  X509_STORE_CTX_set_error(xs, X509_V_OK);
  /* Recorded only once the handshake is done (np__tls_known_commit): a peer that shows a
   * certificate whose key it does not hold fails at CertificateVerify, and must not leave its
   * certificate recorded, which would refuse the real server from then on. */
  v->tofu_pending = 1;
  return 1;
}

int np__tls_known_commit(np__tls *t, struct np__tls_verdict *v) {
  char text[NP_TLS_FP_LEN + 1];
  int line = 0, r;

  v->tofu_pending = 0;
  np__tls_fingerprint_format(v->seen, text);
  if ((r = np__known_add(t->known, t->known_key, text, &line)) != 0) {
    snprintf(v->verify_err, sizeof(v->verify_err),
             "trust on first use cannot record it in %.200s: %s (set known_servers to a file this "
             "user may write)",
             t->known, np_strerror(r));
    v->verify_failed = 1;
    return r;
  }
  np__log(t->log, NP_LOG_INFO,
          "trusting %s on first use: its certificate is %s; recorded in %s:%d (a later change is "
          "refused: delete that line if the server's certificate is replaced on purpose)",
          t->known_key, text, t->known, line);
  return 0;
}

/* Client verification, every mode: remember what the server presented, so a failure can name it,
 * then check the pin or the chain. */
static int verify_server(X509_STORE_CTX *xs, void *arg) {
  np__tls *t = arg;
  SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
  struct np__tls_verdict *v = SSL_get_app_data(ssl); /* the conn's (tls.c) */
  X509 *leaf = X509_STORE_CTX_get0_cert(xs);
  int ok;

  if (leaf == NULL)
    return 0;
  cert_fp(leaf, v->seen);
  v->seen_set = 1;
  if (t->pinned) {
    ok = CRYPTO_memcmp(v->seen, t->pin, 32) == 0;
    if (!ok) {
      v->pinned_mismatch = 1;
      X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_UNTRUSTED);
    }
  } else if ((ok = verify_known(t, v, xs)) >= 0) {
    if (!ok)
      X509_STORE_CTX_set_error(xs, X509_V_ERR_CERT_UNTRUSTED);
  } else {
    ok = X509_verify_cert(xs) == 1;
    if (!ok)
      snprintf(v->verify_err, sizeof(v->verify_err), "%s",
               X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)));
  }
  v->verify_failed = !ok;
  return ok;
}

int np__tls_client_ca_only(uv_loop_t *loop, const char *ca_file, const char *cert, const char *key,
                           const np__logger *log, np__tls **out) {
  np__tls *t;

  if ((t = ctx_new(loop, log, 0)) == NULL)
    return UV_ENOMEM;
  if (SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1)
    return ctx_fail(t, "cannot load the cluster's CA file", ca_file);
  /* The same certificate as a client: a server that asks its clients for one (tls_client_ca,
   * the cluster's CA too, likely) asks its peers as well. */
  if (cert[0] != '\0' && (SSL_CTX_use_certificate_chain_file(t->ctx, cert) != 1 ||
                          SSL_CTX_use_PrivateKey_file(t->ctx, key, SSL_FILETYPE_PEM) != 1))
    return ctx_fail(t, "cannot use the TLS identity in", cert);
  np__strlcpy(t->host, "the cluster", sizeof(t->host)); /* for the log; no name is checked */
  SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_cert_verify_callback(t->ctx, verify_server, t); /* not pinned, no known: the CA */
  t->ca_only = 1;
  *out = t;
  return 0;
}

int np__tls_client_new(uv_loop_t *loop, const struct np_config *cfg, const np__logger *log,
                       np__tls **out) {
  int port;
  np__tls *t;

  if ((t = ctx_new(loop, log, 0)) == NULL)
    return UV_ENOMEM;
  if (cfg->server_fingerprint[0] != '\0') {
    if (np__tls_fingerprint_parse(cfg->server_fingerprint, t->pin) != 0) {
      np__log(log, NP_LOG_ERROR, "server_fingerprint: '%s' is not a SHA-256 fingerprint",
              cfg->server_fingerprint);
      np__tls_free(t);
      return NP_ECONFIG;
    }
    t->pinned = 1;
  } else if (cfg->tls_ca[0] == '\0' || strcmp(cfg->tls_ca, "system") == 0) {
    if (SSL_CTX_set_default_verify_paths(t->ctx) != 1)
      return ctx_fail(t, "cannot load the system's CA store", "");
  } else if (SSL_CTX_load_verify_locations(t->ctx, cfg->tls_ca, NULL) != 1) {
    return ctx_fail(t, "cannot load the CA file", cfg->tls_ca);
  }
  if (!t->pinned) {
    /* A known_servers line for this server pins it; with tofu the first certificate is recorded. */
    t->tofu = cfg->tofu;
    np__strlcpy(t->known_key, cfg->server, sizeof(t->known_key));
    for (char *c = t->known_key; *c != '\0'; c++) /* recorded as it is matched: any case */
      *c = (char)tolower((unsigned char)*c);
    if (cfg->known_servers[0] != '\0')
      np__strlcpy(t->known, cfg->known_servers, sizeof(t->known));
    else if (np__tls_state_dir(t->known, sizeof(t->known) - 16) == 0)
      strcat(t->known, "/known_servers");
    else if (t->tofu) {
      np__log(log, NP_LOG_ERROR,
              "trust on first use needs a place for known_servers: set known_servers (no "
              "STATE_DIRECTORY, HOME or XDG_STATE_HOME here)");
      np__tls_free(t);
      return NP_ECONFIG;
    }
  }
  if (cfg->tls_server_name[0] != '\0')
    np__strlcpy(t->host, cfg->tls_server_name, sizeof(t->host));
  else if (np__split_hostport(cfg->server, t->host, sizeof(t->host), &port) != 0)
    t->host[0] = '\0';
  SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_cert_verify_callback(t->ctx, verify_server, t);
  if (cfg->tls_cert[0] != '\0') {
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cfg->tls_cert) != 1)
      return ctx_fail(t, "cannot load the client certificate", cfg->tls_cert);
    if (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(t->ctx) != 1)
      return ctx_fail(t, "cannot use the client key", cfg->tls_key);
  }
  *out = t;
  return 0;
}

void np__tls_report_failure(const np__tls *t, const struct np__tls_verdict *v, const char *peer) {
  char e[200], seen[NP_TLS_FP_LEN + 1], want[NP_TLS_FP_LEN + 1];

  if (v->seen_set)
    np__tls_fingerprint_format(v->seen, seen);
  if (v->pinned_mismatch) {
    np__tls_fingerprint_format(t->pin, want);
    np__log(t->log, NP_LOG_ERROR,
            "%s: the server's certificate is %s, but --server-fingerprint says %s: if the server's "
            "key was replaced on purpose, use the new fingerprint; otherwise somebody may be "
            "intercepting the connection",
            peer, seen, want);
  } else if (v->known_mismatch) {
    np__tls_fingerprint_format(v->known_fp, want);
    np__log(t->log, NP_LOG_ERROR,
            "%s: the server's certificate is %s, but %s:%d records %s for %s: if the server's "
            "certificate was replaced on purpose, delete line %d of %s; otherwise somebody may be "
            "intercepting the connection",
            peer, seen, t->known, v->known_line, want, t->known_key, v->known_line, t->known);
  } else if (v->verify_failed && t->ca_only) {
    np__log(t->log, NP_LOG_ERROR,
            "%s: the certificate of this server of the cluster is not one cluster_ca signed (%s); "
            "it is %s: give each server a certificate from the cluster's CA (tls_cert, tls_key)",
            peer, v->verify_err, seen);
  } else if (v->verify_failed) {
    np__log(t->log, NP_LOG_ERROR,
            "%s: the server's certificate is not trusted (%s) for '%s'; it is %s: if that is the "
            "fingerprint np-server printed, pass --server-fingerprint %s (or trust it on first "
            "use: --trust-on-first-use)",
            peer, v->verify_err, t->host, seen, seen);
  } else {
    int reason = ERR_GET_REASON(ERR_peek_last_error());
    ssl_err(e, sizeof(e));
    if (t->server &&
        (reason == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE || reason == SSL_R_TLSV1_ALERT_UNKNOWN_CA))
      np__log(t->log, NP_LOG_WARN,
              "%s: the client does not trust this server's certificate %s (it pins another "
              "fingerprint or CA)",
              peer, t->fingerprint);
    else
      np__log(t->log, NP_LOG_WARN, "%s: TLS handshake failed: %s", peer, e);
  }
}

int np__tls_server_share(const np__tls *base, uv_loop_t *loop, const np__logger *log,
                         np__tls **out) {
  np__tls *t;

  if (!base->server)
    return UV_EINVAL;
  if ((t = malloc(sizeof(*t))) == NULL)
    return UV_ENOMEM;
  *t = *base;
  if (SSL_CTX_up_ref(t->ctx) != 1) {
    free(t);
    return UV_ENOMEM;
  }
  t->loop = loop;
  t->log = log;
  t->refusal = NULL;
  t->refusal_arg = NULL;
  *out = t;
  return 0;
}

void np__tls_free(np__tls *t) {
  if (t == NULL)
    return;
  SSL_CTX_free(t->ctx);
  free(t);
}

const char *np__tls_fingerprint(const np__tls *t) {
  return t->fingerprint;
}

void np__tls_set_refusal(np__tls *t, np__tls_refusal_cb cb, void *arg) {
  t->refusal = cb;
  t->refusal_arg = arg;
}
