/* Shared macros of the public headers. */
#ifndef NATPROXY_COMMON_H
#define NATPROXY_COMMON_H

#if defined(NP_BUILDING_LIBRARY) && defined(__GNUC__)
#define NP_EXPORT __attribute__((visibility("default")))
#else
#define NP_EXPORT
#endif

#ifdef __cplusplus
#define NP_BEGIN_DECLS extern "C" {
#define NP_END_DECLS   }
#else
#define NP_BEGIN_DECLS
#define NP_END_DECLS
#endif

#endif
