/* Codec lookup and names shared by all codecs. */
#include <string.h>

#include "natproxy/codec.h"

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
  static const char *const names[] = {"?",          "HELLO",    "LOGIN",     "LOGIN_RESP", "PROXY",
                                      "PROXY_RESP", "REQ_WORK", "WORK",      "WORK_FAIL",  "PING",
                                      "PONG",       "CLOSE",    "WORK_IDLE", "START",      "MUX"};
  if ((unsigned)type >= sizeof(names) / sizeof(names[0]))
    return "?";
  return names[type];
}
