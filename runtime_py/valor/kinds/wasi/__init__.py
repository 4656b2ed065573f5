"""``type: "wasi"``: a WASI command, spoken to CGI style."""
