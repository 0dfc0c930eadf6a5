//! Any bytes as a NewSignal, NewEvent or RecordBatchRequest, through
//! protobuf decoding and validation: no panic, and nothing accepted that
//! PostgreSQL would refuse (`audit_wire::fuzzing::write_request`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    audit_wire::fuzzing::write_request(data);
});
