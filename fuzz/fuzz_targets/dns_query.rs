#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mpreg::fuzzing::dns_query(data));
