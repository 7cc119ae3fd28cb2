#include "auth.h"

#include "natproxy/config.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <uv.h>

int np__auth_random(void *buf, size_t len) {
  return RAND_bytes(buf, (int)len) == 1 ? 0 : UV_EIO;
}

int np_token_generate(char *buf, size_t len) {
  unsigned char raw[32], b64[48];
  int n;

  if (buf == NULL || len < 44)
    return UV_EINVAL;
  if (np__auth_random(raw, sizeof(raw)) != 0)
    return UV_EIO;
  n = EVP_EncodeBlock(b64, raw, (int)sizeof(raw)); /* 44 characters, the last one '=' */
  OPENSSL_cleanse(raw, sizeof(raw));
  /* base64url: it goes on command lines, in URLs and INI files without quoting */
  for (int i = 0; i < n; i++)
    buf[i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
  while (n > 0 && buf[n - 1] == '=')
    n--;
  buf[n] = '\0';
  OPENSSL_cleanse(b64, sizeof(b64));
  return 0;
}

int np__auth_nonce(unsigned char out[NP_MSG_KEY_LEN]) {
  return np__auth_random(out, NP_MSG_KEY_LEN);
}

static int hmac(const void *key, size_t keylen, const unsigned char *msg, size_t len,
                unsigned char out[NP_MSG_KEY_LEN]) {
  unsigned int outlen = 0;
  if (HMAC(EVP_sha256(), key, (int)keylen, msg, len, out, &outlen) == NULL ||
      outlen != NP_MSG_KEY_LEN)
    return UV_EIO;
  return 0;
}

static int login_hmac(const char *label, const char *token, const unsigned char *snonce,
                      const unsigned char *cnonce, const char *name,
                      unsigned char out[NP_MSG_KEY_LEN]) {
  unsigned char msg[16 + 2 * NP_MSG_KEY_LEN + NP_MSG_NAME_MAX];
  size_t ll = strlen(label), nl = strnlen(name, NP_MSG_NAME_MAX);
  size_t off = 0;

  memcpy(msg, label, ll), off += ll;
  memcpy(msg + off, snonce, NP_MSG_KEY_LEN), off += NP_MSG_KEY_LEN;
  memcpy(msg + off, cnonce, NP_MSG_KEY_LEN), off += NP_MSG_KEY_LEN;
  memcpy(msg + off, name, nl), off += nl;
  return hmac(token, strlen(token), msg, off, out);
}

int np__auth_login_mac(const char *token, const unsigned char snonce[NP_MSG_KEY_LEN],
                       const unsigned char cnonce[NP_MSG_KEY_LEN], const char *name,
                       unsigned char out[NP_MSG_KEY_LEN]) {
  return login_hmac("np-login-1", token, snonce, cnonce, name, out);
}

int np__auth_peer_mac(const char *cluster_token, const unsigned char snonce[NP_MSG_KEY_LEN],
                      const unsigned char cnonce[NP_MSG_KEY_LEN], const char *advertise,
                      unsigned char out[NP_MSG_KEY_LEN]) {
  return login_hmac("np-peer-1", cluster_token, snonce, cnonce, advertise, out);
}

int np__auth_session_key(const char *token, const unsigned char snonce[NP_MSG_KEY_LEN],
                         const unsigned char cnonce[NP_MSG_KEY_LEN], const char *name,
                         unsigned char out[NP_MSG_KEY_LEN]) {
  return login_hmac("np-session-1", token, snonce, cnonce, name, out);
}

static int id_pair_mac(const char label[9], const unsigned char key[NP_MSG_KEY_LEN], uint64_t a,
                       uint64_t b, unsigned char out[NP_MSG_KEY_LEN]) {
  unsigned char msg[9 + 16];
  memcpy(msg, label, 9);
  for (int i = 0; i < 8; i++) {
    msg[9 + i] = (unsigned char)(a >> (56 - 8 * i));
    msg[17 + i] = (unsigned char)(b >> (56 - 8 * i));
  }
  return hmac(key, NP_MSG_KEY_LEN, msg, sizeof(msg), out);
}

int np__auth_work_mac(const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t visitor,
                      unsigned char out[NP_MSG_KEY_LEN]) {
  return id_pair_mac("np-work-1", key, session, visitor, out);
}

int np__auth_idle_mac(const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t serial,
                      unsigned char out[NP_MSG_KEY_LEN]) {
  return id_pair_mac("np-idle-1", key, session, serial, out);
}

int np__auth_stcp_verifier(const char *secret_key, const char *name,
                           unsigned char out[NP_MSG_KEY_LEN]) {
  unsigned char msg[9 + NP_MSG_NAME_MAX];
  size_t nl = strnlen(name, NP_MSG_NAME_MAX);

  memcpy(msg, "np-stcp-1", 9);
  memcpy(msg + 9, name, nl);
  return hmac(secret_key, strlen(secret_key), msg, 9 + nl, out);
}

/* VISIT's proofs: HMAC-SHA256(mac_key, label | [session key] | session | serial | kind | name). */
static int visit_mac(const char label[10], const unsigned char *mac_key,
                     const unsigned char *session_key, uint64_t session, uint64_t serial,
                     uint8_t kind, const char *name, unsigned char out[NP_MSG_KEY_LEN]) {
  unsigned char msg[10 + NP_MSG_KEY_LEN + 16 + 1 + NP_MSG_NAME_MAX];
  size_t nl = strnlen(name, NP_MSG_NAME_MAX), off = 10;

  memcpy(msg, label, 10);
  if (session_key != NULL)
    memcpy(msg + off, session_key, NP_MSG_KEY_LEN), off += NP_MSG_KEY_LEN;
  for (int i = 0; i < 8; i++) {
    msg[off + i] = (unsigned char)(session >> (56 - 8 * i));
    msg[off + 8 + i] = (unsigned char)(serial >> (56 - 8 * i));
  }
  off += 16;
  msg[off++] = kind;
  memcpy(msg + off, name, nl), off += nl;
  return hmac(mac_key, NP_MSG_KEY_LEN, msg, off, out);
}

int np__auth_visit_mac(const unsigned char verifier[NP_MSG_KEY_LEN],
                       const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t serial,
                       uint8_t kind, const char *name, unsigned char out[NP_MSG_KEY_LEN]) {
  return visit_mac("np-visit-1", verifier, key, session, serial, kind, name, out);
}

int np__auth_visit_session_mac(const unsigned char key[NP_MSG_KEY_LEN], uint64_t session,
                               uint64_t serial, uint8_t kind, const char *name,
                               unsigned char out[NP_MSG_KEY_LEN]) {
  return visit_mac("np-visit-0", key, NULL, session, serial, kind, name, out);
}

int np__auth_direct_mac(const unsigned char verifier[NP_MSG_KEY_LEN],
                        const unsigned char key[NP_MSG_KEY_LEN], uint64_t session, uint64_t serial,
                        uint8_t kind, const char *name, unsigned char out[NP_MSG_KEY_LEN]) {
  return visit_mac("np-direct1", verifier, key, session, serial, kind, name, out);
}

int np__auth_direct_token(const unsigned char server_key[NP_MSG_KEY_LEN],
                          const unsigned char path_key[NP_MSG_KEY_LEN], uint64_t path,
                          uint64_t visitor, uint64_t owner, const char *visitor_name,
                          unsigned char out[NP_MSG_KEY_LEN]) {
  /* visit_mac's layout, with the owner's session where the kind goes elsewhere */
  char name[NP_MSG_NAME_MAX + 1];
  size_t nl = strnlen(visitor_name, NP_MSG_NAME_MAX - 16);

  for (int i = 0; i < 8; i++)
    snprintf(name + 2 * i, 3, "%02x", (unsigned)(owner >> (56 - 8 * i)) & 0xff);
  memcpy(name + 16, visitor_name, nl);
  name[16 + nl] = '\0';
  return visit_mac("np-direct0", server_key, path_key, path, visitor, 0, name, out);
}

int np__auth_equal(const unsigned char a[NP_MSG_KEY_LEN], const unsigned char b[NP_MSG_KEY_LEN]) {
  return CRYPTO_memcmp(a, b, NP_MSG_KEY_LEN) == 0;
}
