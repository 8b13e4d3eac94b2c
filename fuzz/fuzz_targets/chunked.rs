//! Any bytes as a chunked request body off the wire: the client stream's
//! chunked reader must give one verdict however reads split them, and
//! accept only framing whose lines all end with CRLF (see
//! `switchyard::proxy::fuzz::chunked_body`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    switchyard::proxy::fuzz::chunked_body(data);
});
