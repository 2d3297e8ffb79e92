#include "http_server.h"
#include "http_server_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The parts of requests and responses that need no connection: reason
 * phrases, the Date header, header lookup, setting a response. */

/* ---- status lines and the Date header ---- */

const char *http_reason(int status)
{
  switch (status) {
  case 100:
    return "Continue";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 304:
    return "Not Modified";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 409:
    return "Conflict";
  case 413:
    return "Payload Too Large";
  case 415:
    return "Unsupported Media Type";
  case 422:
    return "Unprocessable Entity";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  }
  return "Unknown";
}

/* IMF-fixdate (RFC 9110), independent of the locale. */
void http_date(time_t t, char *out, size_t out_size)
{
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                  "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;

  if (gmtime_r(&t, &tm) == NULL) {
    snprintf(out, out_size, "Thu, 01 Jan 1970 00:00:00 GMT");
    return;
  }
  snprintf(out, out_size, "%s, %02d %s %04d %02d:%02d:%02d GMT",
           days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
           tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

const char *http_request_header(const struct http_request *req,
                                const char *name)
{
  size_t i;

  if (req == NULL || name == NULL)
    return NULL;
  for (i = 0; i < req->nheaders; i++)
    if (strcasecmp(req->headers[i].name, name) == 0)
      return req->headers[i].value;
  return NULL;
}

int http_response_set(struct http_response *resp, int status,
                      const char *content_type, const char *body, size_t len)
{
  char *copy = malloc(len + 1);

  free(resp->body);
  resp->body = NULL;
  resp->body_len = 0;
  if (copy == NULL) {
    resp->status = 500;
    resp->content_type = "text/plain";
    return -1;
  }
  if (len > 0)
    memcpy(copy, body, len);
  copy[len] = '\0';
  resp->status = status;
  resp->content_type = content_type;
  resp->body = copy;
  resp->body_len = len;
  return 0;
}
