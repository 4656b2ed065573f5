"""``type: "native"``: a C shared library, in a helper process (server host only)."""
