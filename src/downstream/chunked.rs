//! A strict reader of chunked request framing (RFC 9112 section 7.1), run
//! over the client's bytes before Pingora's own decoder sees them.
//!
//! Pingora decodes chunks with `httparse::parse_chunk_size`, which takes
//! any byte at all inside a chunk extension, bare LF included, until a
//! CRLF: `5;ext=1\n` followed by data reads the data as more extension,
//! and the body then waits for bytes that never come (the client gets a
//! 504 after the backend's `read_timeout`, the backend a half-sent
//! request). It also takes a size followed by blanks and nothing else.
//! A backend or another proxy that ends the line at the LF reads a
//! different body: a way to smuggle a request.
//!
//! This reader takes exactly the grammar and nothing else:
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! chunk-size   = 1*HEXDIG            ; at most 16 digits, as httparse
//! chunk-ext    = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
//! trailer      = *( field-name ":" field-value CRLF )
//! ```
//!
//! Every line ends with CRLF; a bare CR or LF anywhere in the framing, a
//! blank not followed by `;` or `=`, a chunk line over [`MAX_LINE`] bytes
//! or trailers over [`MAX_TRAILERS`] bytes are refused at the byte where
//! they go wrong. What it accepts, Pingora's decoder reads the same way.
//! It costs one pass over the framing bytes; chunk data is skipped whole.

use std::fmt;

/// Longest chunk line (size and extensions), in bytes. Pingora gives up
/// at 8 KiB of unparsed chunk head; staying under that means Pingora never
/// refuses what this reader accepted.
pub const MAX_LINE: usize = 4096;

/// Most trailer bytes after the last chunk (Pingora drops them; it allows
/// 64 KiB).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// Most hex digits in a chunk size, leading zeros included: httparse's limit.
const MAX_DIGITS: u8 = 16;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// How far a call to [`Chunked::feed`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// All the input belongs to the body, which goes on.
    More,
    /// The body ended after this many bytes of the input; the rest is not
    /// the body's.
    End(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Blanks after the size or after an extension value: only `;` may follow.
    Blank,
    /// After `;`: blanks, then an extension name.
    NameStart,
    Name,
    /// Blanks after a name: `=` or `;` must follow.
    NameBlank,
    /// After `=`: blanks, then a token or a quoted string.
    ValueStart,
    Value,
    Quoted,
    QuotedPair,
    /// After a quoted string's closing quote.
    Closed,
    /// The CR ending a chunk line was read.
    LineLf,
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// The reader's state between reads; starts at the body's first byte.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u8,
    /// Bytes of the current chunk line so far.
    line: usize,
    trailers: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
            line: 0,
            trailers: 0,
        }
    }

    /// Whether the whole body, final CRLF included, has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `input`, the body's next bytes, handing each run of chunk
    /// data to `data`. After an error the reader is not to be used again.
    pub fn feed(&mut self, input: &[u8], mut data: impl FnMut(&[u8])) -> Result<Step, Malformed> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(left) = self.state {
                let take = usize::try_from(left).unwrap_or(usize::MAX);
                let take = take.min(input.len() - i);
                data(&input[i..i + take]);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            if self.state == State::Done {
                return Ok(Step::End(i));
            }
            self.byte(input[i])?;
            i += 1;
        }
        Ok(if self.is_done() {
            Step::End(i)
        } else {
            Step::More
        })
    }

    /// One byte of framing (anything but chunk data).
    fn byte(&mut self, b: u8) -> Result<(), Malformed> {
        use State::*;
        let in_line = matches!(
            self.state,
            Size | Blank
                | NameStart
                | Name
                | NameBlank
                | ValueStart
                | Value
                | Quoted
                | QuotedPair
                | Closed
        );
        if in_line {
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(Malformed("chunk line longer than 4096 bytes"));
            }
        }
        if matches!(self.state, TrailerStart | TrailerName | TrailerValue) {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return Err(Malformed("trailers longer than 16 KiB"));
            }
        }
        let blank = b == b' ' || b == b'\t';
        self.state = match (self.state, b) {
            (Size, _) if b.is_ascii_hexdigit() => {
                if self.digits == MAX_DIGITS {
                    return Err(Malformed("chunk size of more than 16 hex digits"));
                }
                self.digits += 1;
                self.size = self.size << 4 | u64::from(hex(b));
                Size
            }
            (Size, _) if self.digits == 0 => return Err(Malformed("chunk size is not hex")),
            (Size | Blank, _) if blank => Blank,
            (Size | Blank | Value | Name | NameBlank | Closed, b';') => NameStart,
            (Size | Name | Value | Closed, b'\r') => LineLf,
            (NameStart, _) if blank => NameStart,
            (NameStart | Name, _) if is_tchar(b) => Name,
            (Name | NameBlank, _) if blank => NameBlank,
            (Name | NameBlank, b'=') => ValueStart,
            (ValueStart, _) if blank => ValueStart,
            (ValueStart, b'"') => Quoted,
            (ValueStart | Value, _) if is_tchar(b) => Value,
            (Value | Closed, _) if blank => Blank,
            (Quoted, b'"') => Closed,
            (Quoted, b'\\') => QuotedPair,
            (Quoted, _) if is_qdtext(b) => Quoted,
            (QuotedPair, _) if blank || b.is_ascii_graphic() || b >= 0x80 => Quoted,
            (Quoted | QuotedPair, _) => return Err(Malformed("bad byte in a quoted extension")),
            (Blank | NameBlank, _) => {
                return Err(Malformed("blank in a chunk line not followed by ; or ="))
            }
            (Size | Name | NameStart | ValueStart | Value | Closed, _) => {
                return Err(Malformed(line_error(b)))
            }
            (LineLf, b'\n') => self.line_done(),
            (DataCr, b'\r') => DataLf,
            (DataCr, _) => return Err(Malformed("chunk data not followed by CRLF")),
            (DataLf, b'\n') => Size,
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, _) if blank || b.is_ascii_graphic() || b >= 0x80 => TrailerValue,
            (TrailerStart | TrailerName | TrailerValue, _) => {
                return Err(Malformed("malformed trailer field"))
            }
            (TrailerLf, b'\n') => TrailerStart,
            (EndLf, b'\n') => Done,
            (LineLf | DataLf | TrailerLf | EndLf, _) => {
                return Err(Malformed("CR not followed by LF"))
            }
            (Data(_) | Done, _) => unreachable!("handled by feed"),
        };
        Ok(())
    }

    /// The CRLF of a chunk line: its data follows, or the trailers after
    /// the last chunk.
    fn line_done(&mut self) -> State {
        let size = std::mem::take(&mut self.size);
        self.digits = 0;
        self.line = 0;
        if size == 0 {
            State::TrailerStart
        } else {
            State::Data(size)
        }
    }
}

fn line_error(b: u8) -> &'static str {
    match b {
        b'\n' => "bare LF in a chunk line",
        b'\r' => "CR in the middle of a chunk extension",
        _ => "bad byte in a chunk line",
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 `qdtext`.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

/// The data of `body` if it is one whole chunked body and nothing more.
#[cfg(test)]
pub fn decode(body: &[u8]) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::new();
    match Chunked::new().feed(body, |d| out.extend_from_slice(d))? {
        Step::End(n) if n == body.len() => Ok(out),
        Step::End(_) => Err(Malformed("bytes after the end of the body")),
        Step::More => Err(Malformed("the body is cut short")),
    }
}

#[cfg(test)]
mod tests;
