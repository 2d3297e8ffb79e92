#include "auth.h"

#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* RFC 6750 b64token: what may follow "Bearer ". */
static int is_token_char(char c)
{
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || strchr("-._~+/", c) != NULL;
}

/* The token of "Bearer <token>" and its length, or NULL when the value
 * has another shape. */
static const char *bearer_token(const char *value, size_t *len)
{
  const char *t;
  size_t n = 0;

  if (value == NULL || strncasecmp(value, "Bearer ", 7) != 0)
    return NULL;
  t = value + 7;
  while (*t == ' ')
    t++;
  while (t[n] != '\0' && is_token_char(t[n]))
    n++;
  while (t[n] == '=')
    n++;
  if (n == 0 || n > AUTH_MAX_TOKEN || t[n + strspn(t + n, " ")] != '\0')
    return NULL;
  *len = n;
  return t;
}

static int sha256(const char *text, size_t len, unsigned char *out)
{
  unsigned int n = 0;

  if (EVP_Digest(text, len, out, &n, EVP_sha256(), NULL) != 1 ||
      n != CFG_SHA256_LEN)
    return -1;
  return 0;
}

enum auth_result auth_bearer_check(const struct cfg_admin *admin,
                                   const char *authorization, const char **name)
{
  unsigned char digest[CFG_SHA256_LEN];
  const char *token;
  const char *found = NULL;
  size_t len = 0, i;

  token = bearer_token(authorization, &len);
  if (token == NULL)
    return AUTH_MISSING;
  if (admin == NULL || sha256(token, len, digest) < 0)
    return AUTH_DENIED;
  /* Every hash is compared, so the time taken says nothing about which
   * one matched or how far a guess got. */
  for (i = 0; i < admin->ntokens && i < CFG_MAX_ADMIN_TOKENS; i++)
    if (CRYPTO_memcmp(digest, admin->tokens[i].sha256, CFG_SHA256_LEN) == 0 &&
        found == NULL)
      found = admin->tokens[i].name;
  OPENSSL_cleanse(digest, sizeof(digest));
  if (found == NULL)
    return AUTH_DENIED;
  if (name != NULL)
    *name = found;
  return AUTH_OK;
}

enum auth_result auth_dev_check(const struct cfg_devservers *dev,
                                const char *authorization,
                                const struct cfg_dev_user **user)
{
  unsigned char digest[CFG_SHA256_LEN];
  const struct cfg_dev_user *found = NULL;
  const char *token;
  size_t len = 0, i;

  token = bearer_token(authorization, &len);
  if (token == NULL)
    return AUTH_MISSING;
  if (dev == NULL || sha256(token, len, digest) < 0)
    return AUTH_DENIED;
  for (i = 0; i < dev->nusers && i < CFG_MAX_DEV_USERS; i++)
    if (CRYPTO_memcmp(digest, dev->users[i].token_sha256, CFG_SHA256_LEN) ==
            0 &&
        found == NULL)
      found = &dev->users[i];
  OPENSSL_cleanse(digest, sizeof(digest));
  if (found == NULL)
    return AUTH_DENIED;
  *user = found;
  return AUTH_OK;
}

int auth_sha256_hex(const char *text, size_t len, char out[AUTH_SHA256_HEX])
{
  static const char hex[] = "0123456789abcdef";
  unsigned char digest[CFG_SHA256_LEN];
  size_t i;

  if (sha256(text, len, digest) < 0)
    return -1;
  for (i = 0; i < CFG_SHA256_LEN; i++) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 15];
  }
  out[2 * CFG_SHA256_LEN] = '\0';
  return 0;
}
