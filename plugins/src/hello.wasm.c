/* A WebAssembly plug-in (type "wasm"), built by `python -m valor.toolchain` into build/hello.wasm.
 *
 * ABI: export memory, alloc(len) -> ptr and handle(ptr, len) -> (resp_ptr << 32 | resp_len).
 * The host writes the request (valor_abi.h format) at alloc's pointer and calls handle; the
 * answer must stay valid until the next call, so it is freed at the start of the next one. */
#include "valor_abi.h"

static uint8_t *answer;

__attribute__((export_name("alloc"))) uint8_t *alloc(uint32_t len) {
  free(answer);
  answer = NULL;
  return malloc(len ? len : 1);
}

static uint64_t reply(uint8_t *buf, size_t len) {
  answer = buf;
  return buf ? (uint64_t)(uintptr_t)buf << 32 | len : 0;
}

__attribute__((export_name("handle"))) uint64_t handle(uint8_t *ptr, uint32_t len) {
  valor_request req;
  char method[16], path[1024], type[256];
  size_t out_len = 0;
  uint8_t *out;
  if (valor_parse(ptr, len, &req) != 0) {
    free(ptr);
    return 0;
  }
  valor_method(&req, method, sizeof method);
  valor_path(&req, path, sizeof path);
  if (strcmp(method, "GET") == 0 && (strcmp(path, "/") == 0 || path[0] == 0)) {
    out = valor_response(200, "text/plain; charset=utf-8", "Hello Plugin!", 13, &out_len);
  } else if (strcmp(method, "POST") == 0 && strcmp(path, "/echo") == 0) {
    if (!valor_header(&req, "content-type", type, sizeof type)) strcpy(type, "application/octet-stream");
    out = valor_response(200, type, req.body, req.body_len, &out_len);
  } else {
    out = valor_not_found(path, &out_len);
  }
  free(ptr);
  return reply(out, out_len);
}
