"""``type: "python"``: a Python module in the host's interpreter, or in a helper process."""
