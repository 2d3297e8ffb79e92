#include "gh_jwt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

/* The GitHub App's credentials and GitHub's times: base64url, ISO 8601
 * times as GitHub writes them, the App JWT (RS256) from its PEM key. */

int gh_base64url(const unsigned char *in, size_t len, char *out,
                 size_t out_size)
{
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t need = len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
  size_t i, o = 0;
  uint32_t v;

  if (need + 1 > out_size || need > INT32_MAX)
    return -1;
  for (i = 0; i + 2 < len; i += 3) {
    v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = tab[v >> 18 & 63];
    out[o++] = tab[v >> 12 & 63];
    out[o++] = tab[v >> 6 & 63];
    out[o++] = tab[v & 63];
  }
  if (len - i == 1) {
    v = (uint32_t)in[i] << 16;
    out[o++] = tab[v >> 18 & 63];
    out[o++] = tab[v >> 12 & 63];
  } else if (len - i == 2) {
    v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
    out[o++] = tab[v >> 18 & 63];
    out[o++] = tab[v >> 12 & 63];
    out[o++] = tab[v >> 6 & 63];
  }
  out[o] = '\0';
  return (int)o;
}

static int parse_digits(const char **p, int n, int *out)
{
  int v = 0;

  while (n-- > 0) {
    if (**p < '0' || **p > '9')
      return -1;
    v = v * 10 + (**p - '0');
    (*p)++;
  }
  *out = v;
  return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
  int64_t era, yoe, doy, doe;

  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = y - era * 400;
  doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int gh_parse_iso8601(const char *s, int64_t *out)
{
  const char *p = s;
  int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;

  if (s == NULL || parse_digits(&p, 4, &y) != 0 || *p++ != '-' ||
      parse_digits(&p, 2, &mo) != 0 || *p++ != '-' ||
      parse_digits(&p, 2, &d) != 0 || (*p != 'T' && *p != 't' && *p != ' '))
    return -1;
  p++;
  if (parse_digits(&p, 2, &h) != 0 || *p++ != ':' ||
      parse_digits(&p, 2, &mi) != 0 || *p++ != ':' ||
      parse_digits(&p, 2, &sec) != 0)
    return -1;
  if (*p == '.' || *p == ',') {
    p++;
    if (*p < '0' || *p > '9')
      return -1;
    while (*p >= '0' && *p <= '9')
      p++;
  }
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    sign = *p++ == '-' ? -1 : 1;
    if (parse_digits(&p, 2, &oh) != 0)
      return -1;
    if (*p == ':')
      p++;
    if (parse_digits(&p, 2, &om) != 0 || oh > 23 || om > 59)
      return -1;
  } else {
    return -1;
  }
  if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
      sec > 60)
    return -1;
  *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec -
         sign * (oh * 3600 + om * 60);
  return 0;
}

static char *b64_dup(const unsigned char *in, size_t len)
{
  size_t size = len / 3 * 4 + 5;
  char *out = malloc(size);

  if (out != NULL && gh_base64url(in, len, out, size) < 0) {
    free(out);
    out = NULL;
  }
  return out;
}

char *gh_jwt_sign(EVP_PKEY *key, int64_t app_id, int64_t now)
{
  static const char header[] = "{\"alg\":\"RS256\",\"typ\":\"JWT\"}";
  char claims[160];
  char *h64 = NULL, *c64 = NULL, *s64 = NULL, *input = NULL, *jwt = NULL;
  unsigned char *sig = NULL;
  size_t siglen = 0, input_len, jwt_len;
  EVP_MD_CTX *ctx = NULL;
  int n;

  n = snprintf(claims, sizeof(claims),
               "{\"iat\":%" PRId64 ",\"exp\":%" PRId64 ",\"iss\":\"%" PRId64
               "\"}",
               now - 60, now + 540, app_id);
  if (n < 0 || (size_t)n >= sizeof(claims))
    goto out;
  h64 = b64_dup((const unsigned char *)header, sizeof(header) - 1);
  c64 = b64_dup((const unsigned char *)claims, (size_t)n);
  if (h64 == NULL || c64 == NULL)
    goto out;
  input_len = strlen(h64) + 1 + strlen(c64);
  input = malloc(input_len + 1);
  if (input == NULL)
    goto out;
  snprintf(input, input_len + 1, "%s.%s", h64, c64);
  ctx = EVP_MD_CTX_new();
  if (ctx == NULL ||
      EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
      EVP_DigestSign(ctx, NULL, &siglen, (const unsigned char *)input,
                     input_len) != 1)
    goto out;
  sig = malloc(siglen);
  if (sig == NULL ||
      EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)input,
                     input_len) != 1)
    goto out;
  s64 = b64_dup(sig, siglen);
  if (s64 == NULL)
    goto out;
  jwt_len = input_len + 1 + strlen(s64);
  jwt = malloc(jwt_len + 1);
  if (jwt != NULL)
    snprintf(jwt, jwt_len + 1, "%s.%s", input, s64);

out:
  EVP_MD_CTX_free(ctx);
  free(sig);
  free(s64);
  free(input);
  free(c64);
  free(h64);
  return jwt;
}

EVP_PKEY *gh_key_from_pem(const char *pem, size_t pem_len)
{
  EVP_PKEY *key = NULL;
  BIO *bio;

  if (pem_len > INT32_MAX)
    return NULL;
  bio = BIO_new_mem_buf(pem, (int)pem_len);
  if (bio == NULL)
    return NULL;
  key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
  BIO_free(bio);
  if (key != NULL && EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
    EVP_PKEY_free(key);
    key = NULL;
  }
  return key;
}

#ifdef RUNFLEET_UNITTEST
char *gh_app_jwt(const char *pem, size_t pem_len, int64_t app_id, int64_t now)
{
  EVP_PKEY *key = gh_key_from_pem(pem, pem_len);
  char *jwt;

  if (key == NULL)
    return NULL;
  jwt = gh_jwt_sign(key, app_id, now);
  EVP_PKEY_free(key);
  return jwt;
}
#endif
