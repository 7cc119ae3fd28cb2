#include "udp_seal.h"

#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "internal.h"

static int derive(const unsigned char master[NP_SEAL_MASTER], const char *label, uint64_t session,
                  unsigned char key[32]) {
  unsigned char msg[32];
  unsigned int n = 32;
  size_t l = strlen(label);

  memcpy(msg, label, l);
  np__put_be(msg + l, session, 8);
  return HMAC(EVP_sha256(), master, NP_SEAL_MASTER, msg, l + 8, key, &n) != NULL ? 0 : NP_ETLS;
}

static EVP_CIPHER_CTX *keyed(const unsigned char key[32], int enc) {
  EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
  if (c != NULL && EVP_CipherInit_ex(c, EVP_chacha20_poly1305(), NULL, key, NULL, enc) != 1) {
    EVP_CIPHER_CTX_free(c);
    c = NULL;
  }
  return c;
}

int np__seal_init(np__seal *s, const unsigned char master[NP_SEAL_MASTER], uint64_t session,
                  int server) {
  unsigned char c2s[32], s2c[32];
  int r;

  memset(s, 0, sizeof(*s));
  s->session = session;
  if ((r = derive(master, "np-udp-1 c2s", session, c2s)) != 0 ||
      (r = derive(master, "np-udp-1 s2c", session, s2c)) != 0)
    return r;
  s->tx = keyed(server ? s2c : c2s, 1);
  s->rx = keyed(server ? c2s : s2c, 0);
  OPENSSL_cleanse(c2s, sizeof(c2s));
  OPENSSL_cleanse(s2c, sizeof(s2c));
  if (s->tx == NULL || s->rx == NULL) {
    np__seal_free(s);
    return UV_ENOMEM;
  }
  return 0;
}

void np__seal_free(np__seal *s) {
  EVP_CIPHER_CTX_free(s->tx);
  EVP_CIPHER_CTX_free(s->rx);
  s->tx = s->rx = NULL;
}

int np__seal_peek(const char *pkt, size_t len, int *type, uint64_t *session) {
  const unsigned char *p = (const unsigned char *)pkt;
  if (len < NP_SEAL_OVERHEAD || p[0] < NP_SEAL_DATA || p[0] > NP_SEAL_PROBE_ACK)
    return NP_SEAL_ESHORT;
  *type = p[0];
  *session = np__get_be(p + 1, 8);
  return 0;
}

/* The nonce: 4 zero bytes and the counter. Each direction has a key of its own, and a counter is
 * never sent twice under one key, so no nonce repeats. */
static void nonce(unsigned char n[12], uint64_t counter) {
  memset(n, 0, 4);
  np__put_be(n + 4, counter, 8);
}

int np__seal_pack(np__seal *s, int type, uint64_t flow, const char *payload, size_t len,
                  char *out) {
  EVP_CIPHER_CTX *c = s->tx;
  unsigned char *o = (unsigned char *)out, n[12], fl[8];
  int outl, l2;

  if (len > NP_SEAL_MAX - NP_SEAL_OVERHEAD)
    return UV_EMSGSIZE;
  o[0] = (unsigned char)type;
  np__put_be(o + 1, s->session, 8);
  np__put_be(o + 9, s->tx_next, 8);
  nonce(n, s->tx_next);
  s->tx_next++;
  np__put_be(fl, flow, 8);
  if (EVP_EncryptInit_ex(c, NULL, NULL, NULL, n) != 1 ||
      EVP_EncryptUpdate(c, NULL, &outl, o, NP_SEAL_HDR) != 1 ||
      EVP_EncryptUpdate(c, o + NP_SEAL_HDR, &outl, fl, 8) != 1 ||
      (len > 0 && EVP_EncryptUpdate(c, o + NP_SEAL_HDR + 8, &l2, (const unsigned char *)payload,
                                    (int)len) != 1) ||
      EVP_EncryptFinal_ex(c, o + NP_SEAL_HDR + 8 + len, &l2) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, NP_SEAL_TAG, o + NP_SEAL_HDR + 8 + len) != 1)
    return NP_ETLS;
  return (int)(len + NP_SEAL_OVERHEAD);
}

/* Is counter new to the window? (Checked before the costly decryption, recorded after it.) */
static int fresh(const np__seal *s, uint64_t ctr) {
  if (!s->rx_any || ctr > s->rx_top)
    return 1;
  if (s->rx_top - ctr >= 64)
    return 0;
  return !(s->rx_window >> (s->rx_top - ctr) & 1);
}

static void mark(np__seal *s, uint64_t ctr) {
  if (!s->rx_any) {
    s->rx_any = 1;
    s->rx_top = ctr;
    s->rx_window = 1;
  } else if (ctr > s->rx_top) {
    uint64_t shift = ctr - s->rx_top;
    s->rx_window = shift >= 64 ? 1 : s->rx_window << shift | 1;
    s->rx_top = ctr;
  } else {
    s->rx_window |= (uint64_t)1 << (s->rx_top - ctr);
  }
}

int np__seal_open(np__seal *s, char *pkt, size_t len, int *type, uint64_t *flow, char **payload,
                  size_t *plen) {
  EVP_CIPHER_CTX *c = s->rx;
  unsigned char *p = (unsigned char *)pkt, n[12];
  uint64_t session, ctr;
  size_t body;
  int outl;

  if (np__seal_peek(pkt, len, type, &session) != 0 || session != s->session)
    return NP_SEAL_ESHORT;
  ctr = np__get_be(p + 9, 8);
  if (!fresh(s, ctr))
    return NP_SEAL_EREPLAY;
  body = len - NP_SEAL_HDR - NP_SEAL_TAG;
  nonce(n, ctr);
  if (EVP_DecryptInit_ex(c, NULL, NULL, NULL, n) != 1 ||
      EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, NP_SEAL_TAG, p + len - NP_SEAL_TAG) != 1 ||
      EVP_DecryptUpdate(c, NULL, &outl, p, NP_SEAL_HDR) != 1 ||
      EVP_DecryptUpdate(c, p + NP_SEAL_HDR, &outl, p + NP_SEAL_HDR, (int)body) != 1 ||
      EVP_DecryptFinal_ex(c, p + NP_SEAL_HDR + body, &outl) != 1)
    return NP_SEAL_EAUTH;
  mark(s, ctr);
  *flow = np__get_be(p + NP_SEAL_HDR, 8);
  *payload = pkt + NP_SEAL_HDR + 8;
  *plen = body - 8;
  return 0;
}
