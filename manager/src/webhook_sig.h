#ifndef RUNFLEET_WEBHOOK_SIG_H
#define RUNFLEET_WEBHOOK_SIG_H

#include <stddef.h>

/* Checks an X-Hub-Signature-256 header value ("sha256=" + 64 hex digits)
 * against HMAC-SHA256(secret, body). Compares in constant time. Returns 0
 * when it matches, -1 when the header is missing, malformed or wrong. */
int webhook_sig_verify(const unsigned char *secret, size_t secret_len,
                       const unsigned char *body, size_t body_len,
                       const char *header);

/* Writes "sha256=<hex>" for body into out (at least 72 bytes). Returns 0,
 * or -1 if the HMAC cannot be computed. */
int webhook_sig_sign(const unsigned char *secret, size_t secret_len,
                     const unsigned char *body, size_t body_len, char *out,
                     size_t out_size);

#endif
