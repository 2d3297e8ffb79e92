#ifndef RUNFLEET_AUTH_H
#define RUNFLEET_AUTH_H

#include <stddef.h>

#include "config.h"

/* Bearer tokens of the admin listener. Only their SHA-256 is configured
 * (admin.tokens, admin.tokens_file); a caller's token is hashed and
 * compared with every configured hash in constant time. */

enum auth_result {
  AUTH_OK = 0,
  AUTH_MISSING = -1, /* no Authorization, or not "Bearer <token>": 401 */
  AUTH_DENIED = -2   /* a well-formed token that matches none: 403 */
};

/* Longest token accepted; longer ones are malformed. */
#define AUTH_MAX_TOKEN 512
#define AUTH_SHA256_HEX 65 /* 64 hex digits and a NUL */

/* Checks an Authorization header value (may be NULL) against admin's
 * tokens. On AUTH_OK, *name (if not NULL) is the matching token's name. */
enum auth_result auth_bearer_check(const struct cfg_admin *admin,
                                   const char *authorization,
                                   const char **name);

/* Checks an Authorization header value against the dev server users'
 * tokens (devservers.users[].token_sha256), in constant time like
 * auth_bearer_check. On AUTH_OK, *user is the matching user. */
enum auth_result auth_dev_check(const struct cfg_devservers *dev,
                                const char *authorization,
                                const struct cfg_dev_user **user);

/* Writes the SHA-256 of text[0..len) as 64 lower-case hex digits and a
 * NUL into out. Returns 0, or -1 when OpenSSL fails. */
int auth_sha256_hex(const char *text, size_t len, char out[AUTH_SHA256_HEX]);

#endif
