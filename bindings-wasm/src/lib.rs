//! # ringkv-wasm
//!
//! ringkv's core in the browser: a thin [`wasm_bindgen`] layer over the deterministic simulator
//! ([`Sim`], over `ringkv_core::sim::Sim`) and the placement ring ([`Ring`], over
//! `ringkv_core::ring::Ring`), for the visualizer in `bindings-wasm/web/`.
//!
//! Every JavaScript method is a wrapper (`js_*` in Rust) over a plain Rust method of the same name
//! that returns an owned document from [`interop`]; the wrapper only converts (serde-wasm-bindgen,
//! JSON-compatible: maps become objects) and turns [`Error`] into a thrown JS `Error` whose
//! message says what was wrong. That keeps the whole layer testable on the host target
//! (`cargo test -p ringkv-wasm`). 128-bit ring positions travel as decimal strings, because
//! serde-wasm-bindgen refuses integers above 2^53. The TypeScript types of the documents are in
//! [`interop`]'s custom section, so the generated `ringkv_wasm.d.ts` is fully typed.
//!
//! The module is built with `panic = "abort"`: the layer validates its inputs before the core
//! sees them, and a panic left anyway (a bug) is written to the console before the module traps.

mod error;
pub mod interop;
mod ring;
mod sim;

pub use error::Error;
pub use ring::Ring;
pub use sim::Sim;

#[cfg(target_arch = "wasm32")]
mod console {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = console, js_name = error)]
        pub fn error(message: &str);
    }

    /// Sends panic messages to the console (the module traps right after).
    #[wasm_bindgen(start)]
    pub fn start() {
        std::panic::set_hook(Box::new(|info| {
            error(&format!("ringkv-wasm panicked: {info}"));
        }));
    }
}
