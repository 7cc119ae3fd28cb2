#include "natproxy/error.h"

#include <uv.h>

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
    /* Everything else we return is a libuv code, which libuv can name. */
    return uv_strerror(err);
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
    return uv_err_name(err);
  }
}
