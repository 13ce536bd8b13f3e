//! Fuzz target `context`: see [`ringkv::fuzzing::context`] for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringkv::fuzzing::context(data));
