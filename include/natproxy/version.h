#ifndef NATPROXY_VERSION_H
#define NATPROXY_VERSION_H

#include <natproxy/common.h>

NP_BEGIN_DECLS

#define NP_VERSION_MAJOR 0
#define NP_VERSION_MINOR 1
#define NP_VERSION_PATCH 0
#define NP_VERSION_HEX   ((NP_VERSION_MAJOR << 16) | (NP_VERSION_MINOR << 8) | NP_VERSION_PATCH)

/* The version of the library actually loaded, as NP_VERSION_HEX and as "0.1.0". */
NP_EXPORT unsigned int np_version(void);
NP_EXPORT const char *np_version_string(void);

NP_END_DECLS

#endif
