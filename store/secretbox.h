/* SPDX-License-Identifier: MIT */
/*
 * Secret values at rest: AES-256-GCM through OpenSSL's EVP interface, under
 * a 32-byte key kept in a file outside the state store (mode 0600). The
 * state store holds only sealed bytes. Buffers holding plain values are
 * locked in memory and wiped before they are freed.
 */
#ifndef INFRAFS_STORE_SECRETBOX_H
#define INFRAFS_STORE_SECRETBOX_H

#include "util/buf.h"

#include <stdbool.h>
#include <stddef.h>

#define SECRET_KEY_BYTES 32

struct secret_key {
	unsigned char bytes[SECRET_KEY_BYTES];
};

/*
 * Loads the key from path. When the file does not exist and create is
 * true, makes it (mode 0600, 32 random bytes, fsync'd, parent directory
 * created 0700 when missing). A file of the wrong size or with group or
 * other permission bits is refused. Returns 0 or a negative errno with a
 * message for the user in err.
 */
int secret_key_load(const char *path, bool create, struct secret_key *key,
		    char *err, size_t errlen);

/*
 * Seals plain into out as nonce (12 bytes) | ciphertext | tag (16 bytes).
 * aad binds the sealed value to where it belongs (environment and name),
 * so a sealed value moved to another row does not open. Returns 0 or
 * -EIO.
 */
int secret_seal(const struct secret_key *key, const void *plain, size_t len,
		const void *aad, size_t aadlen, struct buf *out);

/*
 * Opens a sealed value. On success *plain is a locked buffer of *plainlen
 * bytes plus a NUL, to be released with secret_wipe_free(). Returns 0,
 * or -EBADMSG when the value or its aad was tampered with.
 */
int secret_open(const struct secret_key *key, const void *sealed, size_t len,
		const void *aad, size_t aadlen, char **plain, size_t *plainlen);

/* Allocates len bytes locked in memory (mlock), zeroed. */
void *secret_alloc(size_t len);
/* Wipes and frees what secret_alloc() or secret_open() returned. */
void secret_wipe_free(void *p, size_t len);

#endif
