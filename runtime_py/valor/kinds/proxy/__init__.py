"""``type: "proxy"``: an upstream HTTP service, confined to a path."""
