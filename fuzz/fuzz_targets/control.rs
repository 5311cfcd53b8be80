//! Fuzz target `control`: the body is lbcore::fuzzing::control, which the stable
//! smoke test (core/tests/fuzz_smoke.rs) runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lbcore::fuzzing::control(data));
