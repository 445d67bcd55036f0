#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| govshare::fuzzing::uscc(data));
