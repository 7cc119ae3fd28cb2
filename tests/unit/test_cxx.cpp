// The public headers compile as C++ and link from C++ (extern "C" everywhere).
#include <natproxy.h>

#include <cstdio>
#include <cstring>

int main() {
  np_msg m = {};
  np_mux_options mo = NP_MUX_OPTIONS_INIT; // the initializer macro is valid C++ too
  mo.client = 1;
  m.type = NP_MSG_PING;
  char buf[NP_CODEC_MAX_ENCODED];
  int n = np_codec_native()->encode(&m, buf, sizeof(buf));
  std::printf("C++: libnatproxy %s, PING encodes to %d bytes\n", np_version_string(), n);
  bool ok = n > 0 && mo.size == sizeof(mo);
  return ok && std::strcmp(np_err_name(NP_EAUTH), "NP_EAUTH") == 0 ? 0 : 1;
}
