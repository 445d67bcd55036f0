#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| govshare::fuzzing::citizen_id(data));
