//! Fuzz target `http_request`: see [`ringkv::fuzzing::http_request`] for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringkv::fuzzing::http_request(data));
