//! Fuzz target `peer_frame`: see [`ringkv::fuzzing::peer_frame`] for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringkv::fuzzing::peer_frame(data));
