// SPDX-License-Identifier: MIT
#include "build_info.h"

#include "build_info_gen.h"
#include "node.h" /* FUSE_USE_VERSION */

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#ifndef INFRAFS_VERSION
#define INFRAFS_VERSION "0.0.0"
#endif

#ifdef HAVE_LIBSYSTEMD
#define SD_NOTIFY "yes"
#else
#define SD_NOTIFY "no (built without libsystemd)"
#endif

struct build_facts build_facts(void)
{
	return (struct build_facts){
		.version = INFRAFS_VERSION,
		.commit = INFRAFS_COMMIT,
		.buildtype = INFRAFS_BUILDTYPE,
		.sanitize = INFRAFS_SANITIZE,
		.compiler = "cc " __VERSION__,
	};
}

void build_info(struct buf *out)
{
	struct build_facts f = build_facts();

	buf_printf(out, "infrafs %s\n", f.version);
	buf_printf(out, "commit: %s\n", f.commit);
	buf_printf(out, "build: %s, sanitize %s, %s\n", f.buildtype, f.sanitize,
		   f.compiler);
	buf_printf(out, "sd_notify: %s\n", SD_NOTIFY);
	buf_printf(out, "libfuse: %s\n", fuse_pkgversion());
	buf_printf(out, "sqlite: %s\n", sqlite3_libversion());
	/* 150018 is 15.18: major times 10000 plus minor, since version 10. */
	buf_printf(out, "libpq: %d.%d\n", PQlibVersion() / 10000,
		   PQlibVersion() % 10000);
	buf_printf(out, "openssl: %s\n", OpenSSL_version(OPENSSL_VERSION));
	buf_printf(out, "jansson: %s\n", jansson_version_str());
	buf_printf(out, "curl: %s\n",
		   curl_version_info(CURLVERSION_NOW)->version);
}
