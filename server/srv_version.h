/*
 * srv_version.h - the build's version, for --version, the startup log
 * line and the wshub_build_info metric.
 *
 * srv_version is the VERSION file's content (the Makefile passes it as
 * WSHUB_VERSION); srv_revision is `git describe --always --dirty` at
 * build time, or "" when the tree has no .git (a release tarball).
 */
#ifndef SRV_VERSION_H
#define SRV_VERSION_H

extern const char srv_version[];
extern const char srv_revision[];

#endif /* SRV_VERSION_H */
