"""What several kinds share: helper processes and their frames, the wasm and native ABI, and
the browser host's bridge to JavaScript."""
