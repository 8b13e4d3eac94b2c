//! Any bytes as a client request that Pingora hands to Switchyard: the
//! framing and limit checks, the request id and the forwarded headers must
//! keep their promises (see `switchyard::proxy::fuzz`), and nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard::proxy::fuzz::request(data);
});
