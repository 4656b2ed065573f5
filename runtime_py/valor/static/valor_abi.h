/* Valor's message format for C plug-ins (wasm and native kinds). Header-only, no allocation
 * beyond malloc/free.
 *
 * A message is one buffer: a 4-byte little-endian head length n, n bytes of JSON head, then the
 * raw body. Request head: {"method":"GET","url":"http://host/p?q=1","headers":[["name","value"]]}.
 * Response head: {"status":200,"headers":[["content-type","text/plain"]]}.
 * Header names arrive in lower case. No stdio, so a wasm module built with it imports nothing. */
#ifndef VALOR_ABI_H
#define VALOR_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Append a string literal to buf at offset n. */
#define VALOR_PUT(buf, n, lit) (memcpy((buf) + (n), (lit), sizeof(lit) - 1), (n) += sizeof(lit) - 1)

typedef struct {
  const char *head;
  uint32_t head_len;
  const uint8_t *body;
  uint32_t body_len;
} valor_request;

/* Split a request buffer into head and body. Returns 0 on success. */
static int valor_parse(const uint8_t *buf, size_t len, valor_request *req) {
  if (len < 4) return -1;
  uint32_t n = buf[0] | buf[1] << 8 | buf[2] << 16 | (uint32_t)buf[3] << 24;
  if (n > len - 4) return -1;
  req->head = (const char *)buf + 4;
  req->head_len = n;
  req->body = buf + 4 + n;
  req->body_len = (uint32_t)(len - 4 - n);
  return 0;
}

/* Copy the JSON string that follows `key` (e.g. "\"method\":\"") in the head into out.
 * Escapes are copied as they are: enough for methods, URLs and header values. */
static size_t valor_after(const valor_request *req, const char *key, char *out, size_t cap) {
  size_t klen = strlen(key);
  if (cap == 0) return 0;
  out[0] = 0;
  for (size_t i = 0; i + klen <= req->head_len; i++) {
    if (memcmp(req->head + i, key, klen) != 0) continue;
    size_t j = i + klen, k = 0;
    while (j < req->head_len && req->head[j] != '"' && k + 1 < cap) {
      if (req->head[j] == '\\' && j + 1 < req->head_len) {
        if (k + 2 >= cap) break; /* an escape is kept whole, with room for the terminator */
        out[k++] = req->head[j++];
      }
      out[k++] = req->head[j++];
    }
    out[k] = 0;
    return k;
  }
  return 0;
}

static size_t valor_method(const valor_request *req, char *out, size_t cap) {
  return valor_after(req, "\"method\":\"", out, cap);
}

/* The path of the request URL (the mount prefix is already stripped), without the query. */
static size_t valor_path(const valor_request *req, char *out, size_t cap) {
  char url[2048];
  valor_after(req, "\"url\":\"", url, sizeof url);
  const char *p = strstr(url, "://");
  p = p ? strchr(p + 3, '/') : url;
  if (!p) p = "/";
  size_t k = 0;
  while (p[k] && p[k] != '?' && p[k] != '#' && k + 1 < cap) { out[k] = p[k]; k++; }
  out[k] = 0;
  return k;
}

/* The value of a request header by its lower-case name, "" when absent. */
static size_t valor_header(const valor_request *req, const char *name, char *out, size_t cap) {
  char key[128];
  size_t n = strlen(name);
  if (n + 6 > sizeof key) return 0;
  memcpy(key, "[\"", 2);
  memcpy(key + 2, name, n);
  memcpy(key + 2 + n, "\",\"", 4);
  return valor_after(req, key, out, cap);
}

/* Build a response buffer (malloc'd; the caller frees it). content_type is a plain literal. */
static uint8_t *valor_response(int status, const char *content_type, const void *body,
                               size_t body_len, size_t *out_len) {
  char head[512];
  size_t n = 0, t = strlen(content_type);
  if (status < 100 || status > 599 || t > 400) return NULL;
  VALOR_PUT(head, n, "{\"status\":");
  head[n++] = (char)('0' + status / 100);
  head[n++] = (char)('0' + status / 10 % 10);
  head[n++] = (char)('0' + status % 10);
  VALOR_PUT(head, n, ",\"headers\":[[\"content-type\",\"");
  memcpy(head + n, content_type, t);
  n += t;
  VALOR_PUT(head, n, "\"]]}");
  uint8_t *buf = malloc(4 + n + body_len);
  if (!buf) return NULL;
  buf[0] = n & 0xff;
  buf[1] = (n >> 8) & 0xff;
  buf[2] = buf[3] = 0;
  memcpy(buf + 4, head, n);
  if (body_len) memcpy(buf + 4 + n, body, body_len);
  *out_len = 4 + n + body_len;
  return buf;
}

/* A 404 answer {"error":"no route","path":...} (the same body every example kind gives). */
static uint8_t *valor_not_found(const char *path, size_t *out_len) {
  char body[1100];
  size_t n = 0, p = strlen(path);
  if (p > 1000) p = 1000;
  VALOR_PUT(body, n, "{\"error\":\"no route\",\"path\":\"");
  for (size_t i = 0; i < p; i++)
    if (path[i] != '"' && path[i] != '\\') body[n++] = path[i];
  VALOR_PUT(body, n, "\"}");
  return valor_response(404, "application/json", body, n, out_len);
}

#endif
