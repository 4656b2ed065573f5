"""``type: "js"``: a Web Worker script, run by a pool of workers in both hosts."""
