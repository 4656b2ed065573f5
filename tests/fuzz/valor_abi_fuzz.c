/* Fuzz harness for valor_abi.h: every helper a C plug-in calls on a request, on any bytes a
 * client (through the host) can send. Built with -fsanitize=fuzzer,address,undefined it is a
 * libFuzzer target; with -DVALOR_STANDALONE it runs the files named on its command line once
 * each (the regression inputs), under any compiler's sanitizers. */
#include <stdio.h>

#include "valor_abi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  valor_request req;
  if (valor_parse(data, size, &req) != 0) return 0;
  /* Buffers of the sizes the examples use, and the smallest ones, where an off-by-one shows. */
  char method[16], path[256], value[256], one[1], two[2];
  valor_method(&req, method, sizeof method);
  valor_path(&req, path, sizeof path);
  valor_path(&req, two, sizeof two);
  valor_header(&req, "content-type", value, sizeof value);
  valor_header(&req, "x-request-id", two, sizeof two);
  valor_after(&req, "\"url\":\"", one, sizeof one);
  valor_after(&req, "\"url\":\"", two, sizeof two);
  size_t out_len = 0;
  uint8_t *answer = valor_not_found(path, &out_len);
  free(answer);
  answer = valor_response(200, "text/plain", req.body, req.body_len, &out_len);
  free(answer);
  return 0;
}

#ifdef VALOR_STANDALONE
int main(int argc, char **argv) {
  static uint8_t buffer[1 << 20];
  for (int i = 1; i < argc; i++) {
    FILE *file = fopen(argv[i], "rb");
    if (!file) return 2;
    size_t size = fread(buffer, 1, sizeof buffer, file);
    fclose(file);
    LLVMFuzzerTestOneInput(buffer, size);
  }
  return 0;
}
#endif
