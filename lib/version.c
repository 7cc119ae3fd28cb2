#include "natproxy/version.h"

#define NP_STR_(x) #x
#define NP_STR(x)  NP_STR_(x)

unsigned int np_version(void) {
  return NP_VERSION_HEX;
}

const char *np_version_string(void) {
  return NP_STR(NP_VERSION_MAJOR) "." NP_STR(NP_VERSION_MINOR) "." NP_STR(NP_VERSION_PATCH);
}
