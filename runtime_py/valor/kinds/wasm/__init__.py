"""``type: "wasm"``: a WebAssembly module speaking Valor's ABI."""
