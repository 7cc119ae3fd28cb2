/* Codec lookup and names shared by all codecs. */
#include "natproxy/codec.h"

#include <string.h>

#include <uv.h>

#include "internal.h"

const np_codec_ops *np_codec_find(const char *name) {
  if (name == NULL)
    return NULL;
  if (strcmp(name, "native") == 0)
    return np_codec_native();
  if (strcmp(name, "line") == 0)
    return np_codec_line();
  return NULL;
}

const char *np_msg_type_name(np_msg_type type) {
  static const char *const names[] = {
      "?",         "HELLO", "LOGIN",     "LOGIN_RESP",  "PROXY",       "PROXY_RESP",
      "REQ_WORK",  "WORK",  "WORK_FAIL", "PING",        "PONG",        "CLOSE",
      "WORK_IDLE", "START", "MUX",       "PROXY_OPT",   "PROXY_CLOSE", "PEER",
      "FORWARD",   "VISIT", "DIRECT",    "DIRECT_INTRO"};
  if ((unsigned)type >= sizeof(names) / sizeof(names[0]))
    return "?";
  return names[type];
}

int np__codec_ops_check(const np_codec_ops *ops) {
  /* Only one layout exists so far; a later one adds its size here. 0 is a caller who forgot, a
   * larger size a codec that expects functions this library would not call. */
  if (ops == NULL || ops->size != sizeof(np_codec_ops) || ops->decode == NULL ||
      ops->encode == NULL)
    return UV_EINVAL;
  return 0;
}
