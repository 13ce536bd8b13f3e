//! Fuzz target `storage_record`: see [`ringkv::fuzzing::storage_record`] for what it feeds and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringkv::fuzzing::storage_record(data));
