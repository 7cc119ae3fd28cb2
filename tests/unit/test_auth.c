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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_private_proofs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
