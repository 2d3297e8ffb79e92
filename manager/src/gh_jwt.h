#ifndef RUNFLEET_GH_JWT_H
#define RUNFLEET_GH_JWT_H

/* The encoding, time and JWT parts of the GitHub client (gh_jwt.c), for
 * github.c. */

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* Writes in as unpadded base64url with a NUL into out; returns the length,
 * or -1 when out is too small. */
int gh_base64url(const unsigned char *in, size_t len, char *out,
                 size_t out_size);
/* Parses an ISO 8601 UTC time ("2016-07-11T22:14:10Z", fractions and
 * +hh:mm offsets allowed) into Unix seconds; 0 or -1. */
int gh_parse_iso8601(const char *s, int64_t *out);
/* The App JWT for now (iat = now - 60, exp = now + 540) signed with key;
 * a malloc'd string or NULL. */
char *gh_jwt_sign(EVP_PKEY *key, int64_t app_id, int64_t now);
/* The private key of a PEM text, or NULL. */
EVP_PKEY *gh_key_from_pem(const char *pem, size_t pem_len);
/* gh_jwt_sign with the key of a PEM text. */
char *gh_app_jwt(const char *pem, size_t pem_len, int64_t app_id, int64_t now);

#endif
