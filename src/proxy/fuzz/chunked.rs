//! Arbitrary bytes as a chunked request body, read by the client stream's
//! chunked reader as it would read them off the wire: the first byte
//! seeds where reads split the rest.
//!
//! The promises: the same verdict, the same end and the same data however
//! the bytes are split; the end, when found, is inside the input; and in
//! a body that is accepted, every line of the framing ends with CRLF (no
//! bare CR or LF, nothing a backend could end a line at differently) and
//! carries no NUL.

use crate::downstream::{Chunked, ChunkedStep};

/// Runs one input through the chunked reader; panics if a promise is broken.
pub fn chunked_body(data: &[u8]) {
    let Some((&seed, body)) = data.split_first() else {
        return;
    };
    let whole = read(body, &[]);
    let split = read(body, &cuts(seed, body.len()));
    assert_eq!(whole, split, "the verdict depends on how reads split");
    if let Some((Some(end), data_at)) = whole {
        assert!(end <= body.len());
        check_framing(&body[..end], &data_at);
    }
}

/// Where reads split a body of `len` bytes, from `seed`.
fn cuts(seed: u8, len: usize) -> Vec<usize> {
    let step = usize::from(seed % 13) + 1;
    (step..len).step_by(step).collect()
}

/// Reads `body` in pieces ending at `cuts`: `None` if refused, else where
/// the body ended (if it did) and which bytes were chunk data.
fn read(body: &[u8], cuts: &[usize]) -> Option<(Option<usize>, Vec<bool>)> {
    let mut reader = Chunked::new();
    let mut is_data = vec![false; body.len()];
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&body.len())) {
        let piece = &body[from..to];
        let base = piece.as_ptr() as usize;
        let step = reader.feed(piece, |d| {
            let at = from + (d.as_ptr() as usize - base);
            is_data[at..at + d.len()].fill(true);
        });
        match step {
            Err(_) => return None,
            Ok(ChunkedStep::End(n)) => return Some((Some(from + n), is_data)),
            Ok(ChunkedStep::More) => from = to,
        }
    }
    Some((None, is_data))
}

/// CR only before LF, LF only after CR, no NUL, outside chunk data.
fn check_framing(body: &[u8], is_data: &[bool]) {
    let framing = |i: usize| i < body.len() && !is_data[i];
    for (i, &b) in body.iter().enumerate().filter(|&(i, _)| framing(i)) {
        let shown = body.escape_ascii();
        match b {
            b'\r' => assert!(framing(i + 1) && body[i + 1] == b'\n', "bare CR: {shown}"),
            b'\n' => assert!(
                i > 0 && framing(i - 1) && body[i - 1] == b'\r',
                "bare LF: {shown}"
            ),
            0 => panic!("NUL in framing: {shown}"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Pieces that chunked bodies are made of, well-formed or not.
    const PIECES: &[&str] = &[
        "0",
        "5",
        "a",
        "F",
        "00",
        "ffffffffffffffff",
        "g",
        "-",
        "+",
        "x",
        " ",
        "\t",
        ";",
        "=",
        "\"",
        "\\",
        "ext",
        "hello",
        "\r\n",
        "\r",
        "\n",
        "\0",
        ":",
        "X-T",
        "\r\n\r\n",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn pieced_bodies_keep_the_promises(
            seed in any::<u8>(),
            pieces in prop::collection::vec(prop::sample::select(PIECES), 0..24),
        ) {
            let mut data = vec![seed];
            data.extend(pieces.concat().bytes());
            chunked_body(&data);
        }

        #[test]
        fn any_bytes_keep_the_promises(data in prop::collection::vec(any::<u8>(), 0..200)) {
            chunked_body(&data);
        }
    }

    #[test]
    fn the_issues_example_is_refused_and_a_good_body_gets_through() {
        assert!(read(b"5;ext=1\nhello\r\n0\r\n\r\n", &[]).is_none());
        let good = b"5;ext=1\r\nhello\r\n0\r\n\r\n";
        assert_eq!(read(good, &[3, 9]).and_then(|r| r.0), Some(good.len()));
        chunked_body(&[0, b'5', b'\r', b'\n']);
    }
}
