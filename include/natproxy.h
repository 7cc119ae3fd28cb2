/* libnatproxy: everything public. */
#ifndef NATPROXY_H
#define NATPROXY_H

#include <natproxy/client.h>
#include <natproxy/codec.h>
#include <natproxy/config.h>
#include <natproxy/error.h>
#include <natproxy/join.h>
#include <natproxy/log.h>
#include <natproxy/mux.h>
#include <natproxy/pool.h>
#include <natproxy/server.h>
#include <natproxy/stats.h>
#include <natproxy/version.h>

#endif
