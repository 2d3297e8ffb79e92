/* SSH public keys for dev servers: one authorized_keys line checked
 * (type, base64 blob whose own type name matches, optional comment), and
 * a list such as https://github.com/<user>.keys serves filtered to the
 * lines that pass. Every type OpenSSH accepts for users is kept, ECDSA and
 * security keys (sk-*) included. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "devserver.h"

static const char *const dev_key_types[] = {
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    NULL,
};

static int dev_key_type_known(const char *s, size_t len)
{
  size_t i;

  for (i = 0; dev_key_types[i] != NULL; i++)
    if (strlen(dev_key_types[i]) == len &&
        memcmp(dev_key_types[i], s, len) == 0)
      return 1;
  return 0;
}

static int dev_is_b64(char c)
{
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= '0' && c <= '9') || c == '+' || c == '/' || c == '=';
}

/* The blob starts with its own key type as an SSH string (a 4-byte
 * big-endian length, then the name); it must be the line's type. */
static int dev_blob_matches(const char *b64, size_t len, const char *type,
                            size_t type_len)
{
  unsigned char blob[(DEV_KEY_MAX / 4 + 1) * 3];
  int n;
  uint32_t name_len;
  size_t pad = 0;

  if (len == 0 || len % 4 != 0 || len > DEV_KEY_MAX)
    return 0;
  n = EVP_DecodeBlock(blob, (const unsigned char *)b64, (int)len);
  if (n < 0)
    return 0;
  while (pad < 2 && pad < len && b64[len - 1 - pad] == '=')
    pad++;
  n -= (int)pad;
  if (n < 4)
    return 0;
  name_len = (uint32_t)blob[0] << 24 | (uint32_t)blob[1] << 16 |
             (uint32_t)blob[2] << 8 | blob[3];
  return name_len == type_len && (size_t)n >= 4 + name_len &&
         memcmp(blob + 4, type, type_len) == 0 && (size_t)n > 4 + name_len;
}

int dev_key_check(const char *line, size_t len)
{
  const char *type = line, *blob, *end = line + len, *p;
  size_t type_len, blob_len;

  if (len == 0 || len > DEV_KEY_MAX)
    return -EINVAL;
  for (p = line; p < end; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return -EINVAL; /* no newline, NUL or control character */
  p = memchr(line, ' ', len);
  if (p == NULL)
    return -EINVAL;
  type_len = (size_t)(p - type);
  if (!dev_key_type_known(type, type_len))
    return -EINVAL;
  blob = p + 1;
  for (p = blob; p < end && *p != ' '; p++)
    if (!dev_is_b64(*p))
      return -EINVAL;
  blob_len = (size_t)(p - blob);
  if (!dev_blob_matches(blob, blob_len, type, type_len))
    return -EINVAL;
  return 0;
}

int dev_keys_filter(const char *text, size_t len, char *out, size_t size,
                    size_t *kept, size_t *dropped)
{
  const char *p = text, *end = text + len, *nl;
  size_t used = 0, line_len;

  *kept = *dropped = 0;
  if (size == 0)
    return -ENOSPC;
  out[0] = '\0';
  while (p < end) {
    nl = memchr(p, '\n', (size_t)(end - p));
    line_len = (size_t)((nl != NULL ? nl : end) - p);
    if (line_len > 0 && p[line_len - 1] == '\r')
      line_len--;
    if (line_len > 0 && dev_key_check(p, line_len) == 0) {
      if (used + line_len + 2 > size)
        return -ENOSPC;
      memcpy(out + used, p, line_len);
      used += line_len;
      out[used++] = '\n';
      out[used] = '\0';
      (*kept)++;
    } else if (line_len > 0) {
      (*dropped)++;
    }
    p = nl != NULL ? nl + 1 : end;
  }
  return 0;
}
