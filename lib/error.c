#include "natproxy/error.h"

#include <uv.h>

/* libuv names only its own codes: for any other it allocates "Unknown system error N" and never
 * frees it. Statuses arrive from the network (WORK_FAIL, CLOSE), so a peer could make every message
 * cost 32 bytes for good: ask libuv only about codes it knows. */
static int uv_known(int err) {
  switch (err) {
#define NP_UV_CASE_(name, text) case UV_##name:
    UV_ERRNO_MAP(NP_UV_CASE_)
#undef NP_UV_CASE_
    return 1;
  default:
    return 0;
  }
}

const char *np_strerror(int err) {
  switch (err) {
#define NP_ERR_TEXT_(name, value, text)                                                            \
  case NP_E##name:                                                                                 \
    return text;
    NP_ERRNO_MAP(NP_ERR_TEXT_)
#undef NP_ERR_TEXT_
  case 0:
    return "success";
  default:
    return uv_known(err) ? uv_strerror(err) : "unknown error";
  }
}

const char *np_err_name(int err) {
  switch (err) {
#define NP_ERR_NAME_(name, value, text)                                                            \
  case NP_E##name:                                                                                 \
    return "NP_E" #name;
    NP_ERRNO_MAP(NP_ERR_NAME_)
#undef NP_ERR_NAME_
  case 0:
    return "OK";
  default:
    return uv_known(err) ? uv_err_name(err) : "UNKNOWN";
  }
}
