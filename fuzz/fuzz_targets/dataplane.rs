//! Fuzz target `dataplane`: the body is lbcore::fuzzing::dataplane, which the stable
//! smoke test (core/tests/fuzz_smoke.rs) runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lbcore::fuzzing::dataplane(data));
