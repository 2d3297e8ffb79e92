#include "webhook_sig.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SIG_PREFIX "sha256="
#define SIG_PREFIX_LEN (sizeof(SIG_PREFIX) - 1)
#define SIG_DIGEST_LEN 32

static int hex_value(char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static int hmac_sha256(const unsigned char *secret, size_t secret_len,
                       const unsigned char *body, size_t body_len,
                       unsigned char digest[SIG_DIGEST_LEN])
{
  unsigned int len = 0;

  /* HMAC() accepts an empty body only with a non-NULL pointer. */
  if (body == NULL)
    body = (const unsigned char *)"";
  if (HMAC(EVP_sha256(), secret, (int)secret_len, body, body_len, digest,
           &len) == NULL ||
      len != SIG_DIGEST_LEN)
    return -1;
  return 0;
}

int webhook_sig_verify(const unsigned char *secret, size_t secret_len,
                       const unsigned char *body, size_t body_len,
                       const char *header)
{
  unsigned char want[SIG_DIGEST_LEN];
  unsigned char got[SIG_DIGEST_LEN];
  size_t i;
  int rc;

  if (header == NULL || strlen(header) != SIG_PREFIX_LEN + 2 * SIG_DIGEST_LEN)
    return -1;
  if (strncmp(header, SIG_PREFIX, SIG_PREFIX_LEN) != 0)
    return -1;
  for (i = 0; i < SIG_DIGEST_LEN; i++) {
    int hi = hex_value(header[SIG_PREFIX_LEN + 2 * i]);
    int lo = hex_value(header[SIG_PREFIX_LEN + 2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    got[i] = (unsigned char)(hi << 4 | lo);
  }
  if (hmac_sha256(secret, secret_len, body, body_len, want) != 0)
    return -1;
  /* Constant time: the time taken must not tell how many bytes matched. */
  rc = CRYPTO_memcmp(want, got, SIG_DIGEST_LEN) == 0 ? 0 : -1;
  OPENSSL_cleanse(want, sizeof(want));
  return rc;
}

int webhook_sig_sign(const unsigned char *secret, size_t secret_len,
                     const unsigned char *body, size_t body_len, char *out,
                     size_t out_size)
{
  static const char hex[] = "0123456789abcdef";
  unsigned char digest[SIG_DIGEST_LEN];
  size_t i;

  if (out_size < SIG_PREFIX_LEN + 2 * SIG_DIGEST_LEN + 1)
    return -1;
  if (hmac_sha256(secret, secret_len, body, body_len, digest) != 0)
    return -1;
  memcpy(out, SIG_PREFIX, SIG_PREFIX_LEN);
  for (i = 0; i < SIG_DIGEST_LEN; i++) {
    out[SIG_PREFIX_LEN + 2 * i] = hex[digest[i] >> 4];
    out[SIG_PREFIX_LEN + 2 * i + 1] = hex[digest[i] & 0xf];
  }
  out[SIG_PREFIX_LEN + 2 * SIG_DIGEST_LEN] = '\0';
  return 0;
}
