//! Filled by the wasm issue: wasm-bindgen over ringkv-core.
