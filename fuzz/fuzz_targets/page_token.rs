//! Any string as a page or resume token: a usable cursor or a refusal,
//! never a panic (`audit_wire::fuzzing::page_token`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        audit_wire::fuzzing::page_token(token);
    }
});
