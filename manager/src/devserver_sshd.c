/* The sshd_config of a local dev server: an unprivileged sshd -D on one
 * address and port, its own host key, the authorized_keys runfleetd
 * writes, public keys only, and CUDA_VISIBLE_DEVICES set to the held GPUs
 * for every session (SetEnv, OpenSSH 8.7 or later), with
 * RUNFLEET_DEVSERVER naming the reservation (what finds every process of
 * it when it ends) and HOME its owner's home. sshd takes only the first
 * SetEnv line, so all of them share one. StrictModes is off: runfleetd
 * writes authorized_keys itself, and the check is made for keys users keep
 * in their own homes (it would refuse a state_dir below /tmp). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "devserver.h"

/* A value that goes into sshd_config as one token: no blank, quote, hash
 * or control character could start another option or a comment. */
static int dev_sshd_token_ok(const char *s)
{
  const char *p;

  if (s == NULL || s[0] == '\0')
    return 0;
  for (p = s; *p != '\0'; p++)
    if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '#' ||
        *p == '\'' || *p == '\\')
      return 0;
  return 1;
}

int dev_sshd_config(const struct dev_sshd_spec *s, char *out, size_t size)
{
  char gpus[DEV_SSHD_MAX_GPUS * 6] = "";
  size_t i, len = 0;
  int n;

  if (!dev_sshd_token_ok(s->listen) || !dev_sshd_token_ok(s->host_key) ||
      !dev_sshd_token_ok(s->authorized_keys) || !dev_sshd_token_ok(s->user) ||
      s->host_key[0] != '/' || s->authorized_keys[0] != '/' || s->port == 0 ||
      s->port > 65535 || s->ngpus > DEV_SSHD_MAX_GPUS ||
      !dev_sshd_token_ok(s->id) || strchr(s->id, '=') != NULL ||
      (s->home != NULL && (!dev_sshd_token_ok(s->home) || s->home[0] != '/')))
    return -EINVAL;
  for (i = 0; i < s->ngpus; i++) {
    if (s->gpus[i] < 0)
      return -EINVAL;
    len += (size_t)snprintf(gpus + len, sizeof(gpus) - len, "%s%d",
                            i > 0 ? "," : "", s->gpus[i]);
  }
  n = snprintf(out, size,
               "# Written by runfleetd for dev server %s; replaced at start.\n"
               "Port %u\n"
               "ListenAddress %s\n"
               "HostKey %s\n"
               "AuthorizedKeysFile %s\n"
               "AllowUsers %s\n"
               "PubkeyAuthentication yes\n"
               "PasswordAuthentication no\n"
               "KbdInteractiveAuthentication no\n"
               "PermitRootLogin no\n"
               "UsePAM no\n"
               "PidFile none\n"
               "StrictModes no\n"
               "X11Forwarding no\n"
               "PrintMotd no\n"
               "SetEnv CUDA_VISIBLE_DEVICES=%s RUNFLEET_DEVSERVER=%s%s%s\n"
               "Subsystem sftp internal-sftp\n",
               s->id, s->port, s->listen, s->host_key, s->authorized_keys,
               s->user, gpus, s->id, s->home != NULL ? " HOME=" : "",
               s->home != NULL ? s->home : "");
  if (n < 0 || (size_t)n >= size)
    return -ENOSPC;
  return n;
}
