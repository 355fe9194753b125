/* srv_version.c - see srv_version.h.  Rebuilt when either string changes
   (server/server.mk keeps a stamp of them). */
#include "srv_version.h"

#ifndef WSHUB_VERSION
#  define WSHUB_VERSION "0.0.0"
#endif
#ifndef WSHUB_REVISION
#  define WSHUB_REVISION ""
#endif

const char srv_version[] = WSHUB_VERSION;
const char srv_revision[] = WSHUB_REVISION;
