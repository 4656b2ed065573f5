/* A WASI plug-in (type "wasi"), built by `python -m valor.toolchain` into build/hello.wasi.wasm.
 *
 * CGI style, as in WAGI: the request is in the environment (REQUEST_METHOD, PATH_INFO,
 * QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH, HTTP_*), the body on stdin; the answer is
 * headers, a blank line and the body on stdout. stderr goes to the host's log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  const char *method = getenv("REQUEST_METHOD");
  const char *path = getenv("PATH_INFO");
  const char *type = getenv("CONTENT_TYPE");
  if (!method) method = "";
  if (!path || !*path) path = "/";
  if (strcmp(method, "GET") == 0 && strcmp(path, "/") == 0) {
    printf("Status: 200\nContent-Type: text/plain; charset=utf-8\n\nHello Plugin!");
  } else if (strcmp(method, "POST") == 0 && strcmp(path, "/echo") == 0) {
    printf("Status: 200\nContent-Type: %s\n\n", type && *type ? type : "application/octet-stream");
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
  } else {
    fprintf(stderr, "hello.wasi: no route for %s %s\n", method, path);
    printf("Status: 404\nContent-Type: application/json\n\n{\"error\":\"no route\",\"path\":\"%s\"}", path);
  }
  return 0;
}
