/* A native plug-in (type "native"), built by `python -m valor.toolchain` into build/hello.so.
 *
 * C ABI: int valor_handle(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len)
 * answers 0 with a malloc'd response (valor_abi.h format), which the host releases with
 * valor_free(resp). Calls come from one thread at a time, in a helper process. */
#include "valor_abi.h"

int valor_handle(const uint8_t *ptr, size_t len, uint8_t **resp, size_t *resp_len) {
  valor_request req;
  char method[16], path[1024], type[256];
  if (valor_parse(ptr, len, &req) != 0) return 1;
  valor_method(&req, method, sizeof method);
  valor_path(&req, path, sizeof path);
  if (strcmp(method, "GET") == 0 && (strcmp(path, "/") == 0 || path[0] == 0)) {
    *resp = valor_response(200, "text/plain; charset=utf-8", "Hello Plugin!", 13, resp_len);
  } else if (strcmp(method, "POST") == 0 && strcmp(path, "/echo") == 0) {
    if (!valor_header(&req, "content-type", type, sizeof type)) strcpy(type, "application/octet-stream");
    *resp = valor_response(200, type, req.body, req.body_len, resp_len);
  } else {
    *resp = valor_not_found(path, resp_len);
  }
  return *resp ? 0 : 1;
}

void valor_free(uint8_t *resp) { free(resp); }
