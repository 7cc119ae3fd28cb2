/* The proofs of docs/protocol.md against values computed apart from the library (Python's hmac
 * module, from the document's formulas), so that the document and the code cannot drift: a private
 * proxy's verifier and a visitor's VISIT proof; and that every input of the proof matters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"

static void hex(const unsigned char *b, char out[2 * NP_MSG_KEY_LEN + 1]) {
  for (int i = 0; i < NP_MSG_KEY_LEN; i++)
    snprintf(out + 2 * i, 3, "%02x", b[i]);
}

/* python3 -c "import hmac,hashlib,struct; v=hmac.new(b'correct horse', b'np-stcp-1alice.ssh',
 * hashlib.sha256).digest(); print(v.hex()); print(hmac.new(v, b'np-visit-1' + bytes(range(32)) +
 * struct.pack('>QQB', 0x0102030405060708, 42, 4) + b'alice.ssh', hashlib.sha256).hexdigest())";
 * the session's proof: hmac.new(bytes(range(32)), b'np-visit-0' + the same pack + b'alice.ssh') */
static void test_private_proofs(void **state) {
  unsigned char v[NP_MSG_KEY_LEN], k[NP_MSG_KEY_LEN], m[NP_MSG_KEY_LEN], m2[NP_MSG_KEY_LEN];
  char h[2 * NP_MSG_KEY_LEN + 1];
  (void)state;

  for (int i = 0; i < NP_MSG_KEY_LEN; i++)
    k[i] = (unsigned char)i;
  assert_int_equal(np__auth_stcp_verifier("correct horse", "alice.ssh", v), 0);
  hex(v, h);
  assert_string_equal(h, "b29dbe22a1e917081cca0c7f15c46f4b64fa046417b790ef7fc5a16d053d9762");
  assert_int_equal(np__auth_visit_mac(v, k, 0x0102030405060708ull, 42, 4, "alice.ssh", m), 0);
  hex(m, h);
  assert_string_equal(h, "173dc67a897034ce1439e57c2b7cb28c841eb4967a804f7087d91fd67391bce8");
  /* the proof of the session: the session key alone */
  assert_int_equal(np__auth_visit_session_mac(k, 0x0102030405060708ull, 42, 4, "alice.ssh", m2), 0);
  hex(m2, h);
  assert_string_equal(h, "71f64b21ea238de86d023a7ebbc3fccc395dcfe36c9b86a7937a37c888659a0a");
  /* each input changes the proof */
  assert_int_equal(np__auth_visit_mac(v, k, 0x0102030405060708ull, 43, 4, "alice.ssh", m2), 0);
  assert_false(np__auth_equal(m, m2));
  assert_int_equal(np__auth_visit_mac(v, k, 0x0102030405060708ull, 42, 5, "alice.ssh", m2), 0);
  assert_false(np__auth_equal(m, m2));
  assert_int_equal(np__auth_visit_mac(v, k, 0x0102030405060709ull, 42, 4, "alice.ssh", m2), 0);
  assert_false(np__auth_equal(m, m2));
  assert_int_equal(np__auth_visit_mac(v, k, 0x0102030405060708ull, 42, 4, "alice.sshd", m2), 0);
  assert_false(np__auth_equal(m, m2));
  k[31] ^= 1; /* another session's key */
  assert_int_equal(np__auth_visit_mac(v, k, 0x0102030405060708ull, 42, 4, "alice.ssh", m2), 0);
  assert_false(np__auth_equal(m, m2));
  /* the verifier is bound to the name: one proxy's opens no other */
  assert_int_equal(np__auth_stcp_verifier("correct horse", "alice.db", m2), 0);
  assert_false(np__auth_equal(v, m2));
  assert_int_equal(np__auth_stcp_verifier("correct horsE", "alice.ssh", m2), 0);
  assert_false(np__auth_equal(v, m2));
}

/* The direct path's proofs (docs/protocol.md, "Direct paths"), computed the same way:
 * hmac.new(v, b'np-direct1' + bytes(range(32)) + struct.pack('>QQB', 0x0102030405060708, 42, 4) +
 * b'alice.ssh'); the token: hmac.new(bytes(range(100, 132)), b'np-direct0' + bytes(range(200, 232))
 * + struct.pack('>QQB', 0x1122334455667788, 0x0102030405060708, 0) + b'a1b2c3d4e5f60718bob'). */
static void test_direct_proofs(void **state) {
  unsigned char v[NP_MSG_KEY_LEN], k[NP_MSG_KEY_LEN], sk[NP_MSG_KEY_LEN], p[NP_MSG_KEY_LEN];
  unsigned char m[NP_MSG_KEY_LEN], m2[NP_MSG_KEY_LEN];
  char h[2 * NP_MSG_KEY_LEN + 1];
  (void)state;

  for (int i = 0; i < NP_MSG_KEY_LEN; i++) {
    k[i] = (unsigned char)i;
    sk[i] = (unsigned char)(100 + i);
    p[i] = (unsigned char)(200 + i);
  }
  assert_int_equal(np__auth_stcp_verifier("correct horse", "alice.ssh", v), 0);
  assert_int_equal(np__auth_direct_mac(v, k, 0x0102030405060708ull, 42, 4, "alice.ssh", m), 0);
  hex(m, h);
  assert_string_equal(h, "f51a9865fba09b71a1cc5ea55d8fc60c6ee3bd0f76cddf0bf9f0b8e9936e2761");
  /* never a VISIT's proof of the same inputs */
  assert_int_equal(np__auth_visit_mac(v, k, 0x0102030405060708ull, 42, 4, "alice.ssh", m2), 0);
  assert_false(np__auth_equal(m, m2));
  assert_int_equal(np__auth_direct_token(sk, p, 0x1122334455667788ull, 0x0102030405060708ull,
                                         0xa1b2c3d4e5f60718ull, "bob", m),
                   0);
  hex(m, h);
  assert_string_equal(h, "ad174b6a202ed5a2fb339fee8d6c6f70181f9f20d550665578505179f51a0911");
  /* each input changes the token: another owner, visitor, path, key or name */
  assert_int_equal(np__auth_direct_token(sk, p, 0x1122334455667788ull, 0x0102030405060708ull,
                                         0xa1b2c3d4e5f60719ull, "bob", m2),
                   0);
  assert_false(np__auth_equal(m, m2));
  assert_int_equal(np__auth_direct_token(sk, p, 0x1122334455667788ull, 0x0102030405060709ull,
                                         0xa1b2c3d4e5f60718ull, "bob", m2),
                   0);
  assert_false(np__auth_equal(m, m2));
  assert_int_equal(np__auth_direct_token(sk, p, 0x1122334455667789ull, 0x0102030405060708ull,
                                         0xa1b2c3d4e5f60718ull, "bob", m2),
                   0);
  assert_false(np__auth_equal(m, m2));
  assert_int_equal(np__auth_direct_token(sk, p, 0x1122334455667788ull, 0x0102030405060708ull,
                                         0xa1b2c3d4e5f60718ull, "bot", m2),
                   0);
  assert_false(np__auth_equal(m, m2));
  p[0] ^= 1;
  assert_int_equal(np__auth_direct_token(sk, p, 0x1122334455667788ull, 0x0102030405060708ull,
                                         0xa1b2c3d4e5f60718ull, "bob", m2),
                   0);
  assert_false(np__auth_equal(m, m2));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_private_proofs),
      cmocka_unit_test(test_direct_proofs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
