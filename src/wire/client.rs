//! Client-facing formats: commands in (RESP2 arrays of bulk strings, or REPL lines) and replies
//! out (RESP2, or the REPL's plain text). Both forms of a command become one `Command` — a view
//! of argument spans over the input buffer — so a role never sees the syntax.
//!
//! Untrusted input: every count and length is checked against a limit before it is trusted
//! (`ARGS_MAX`, `ARG_BYTES_MAX`, `LINE_BYTES_MAX`); nothing is allocated by a client's numbers.
//! The parser is incremental: `Ok(None)` means "need more bytes", and nothing is consumed.

use std::io::Write;

/// Most arguments in one command (MSET of 512 pairs).
pub const ARGS_MAX: usize = 1025;
/// Largest argument (key or value) accepted.
pub const ARG_BYTES_MAX: usize = 512 * 1024;
/// Longest REPL line, and longest RESP header line.
pub const LINE_BYTES_MAX: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Not RESP: the first byte of a request must be `*` (inline commands are not supported).
    Protocol(&'static str),
    /// A count or length above its limit, or a line too long.
    TooLarge(&'static str),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Protocol(why) => write!(f, "protocol error: {why}"),
            ClientError::TooLarge(why) => write!(f, "too large: {why}"),
        }
    }
}

/// A command: arguments as spans of a buffer the driver owns.
#[derive(Clone, Copy, Debug)]
pub struct Command<'a> {
    pub data: &'a [u8],
    pub spans: &'a [(u32, u32)],
}

impl<'a> Command<'a> {
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn arg(&self, index: usize) -> &'a [u8] {
        let (start, end) = self.spans[index];
        &self.data[start as usize..end as usize]
    }

    /// Whether argument `index` equals `word`, ignoring ASCII case.
    pub fn is(&self, index: usize, word: &str) -> bool {
        index < self.len() && self.arg(index).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// Parses one RESP2 request (an array of bulk strings) at the start of `input`, writing its
/// argument spans (relative to `input`) into `spans`. Returns the bytes it occupies, `None` if
/// it is not complete yet.
pub fn parse_resp(input: &[u8], spans: &mut Vec<(u32, u32)>) -> Result<Option<usize>, ClientError> {
    spans.clear();
    if input.is_empty() {
        return Ok(None);
    }
    if input[0] != b'*' {
        return Err(ClientError::Protocol("expected '*'"));
    }
    let Some((count, mut at)) = header_number(input, 0)? else {
        return Ok(None);
    };
    if count < 0 {
        return Err(ClientError::Protocol("negative array length"));
    }
    if count as usize > ARGS_MAX {
        return Err(ClientError::TooLarge("too many arguments"));
    }
    for _ in 0..count {
        if at >= input.len() {
            return Ok(None);
        }
        if input[at] != b'$' {
            return Err(ClientError::Protocol("expected '$'"));
        }
        let Some((length, start)) = header_number(input, at)? else {
            return Ok(None);
        };
        if length < 0 {
            return Err(ClientError::Protocol("null bulk string in a request"));
        }
        if length as usize > ARG_BYTES_MAX {
            return Err(ClientError::TooLarge("bulk string above the maximum"));
        }
        let end = start + length as usize;
        if input.len() < end + 2 {
            return Ok(None);
        }
        if &input[end..end + 2] != b"\r\n" {
            return Err(ClientError::Protocol("bulk string not followed by CRLF"));
        }
        spans.push((start as u32, end as u32));
        at = end + 2;
    }
    Ok(Some(at))
}

/// `*123\r\n` or `$45\r\n` at `at`: the number and where the line ends.
fn header_number(input: &[u8], at: usize) -> Result<Option<(i64, usize)>, ClientError> {
    let line = &input[at + 1..];
    let limit = line.len().min(24);
    let Some(cr) = line[..limit].iter().position(|&b| b == b'\r') else {
        if line.len() >= 24 {
            return Err(ClientError::Protocol("header line too long"));
        }
        return Ok(None);
    };
    if line.len() < cr + 2 {
        return Ok(None);
    }
    if line[cr + 1] != b'\n' {
        return Err(ClientError::Protocol("header not ended by CRLF"));
    }
    let text = std::str::from_utf8(&line[..cr]).map_err(|_| ClientError::Protocol("bad number"))?;
    let number: i64 = text
        .parse()
        .map_err(|_| ClientError::Protocol("bad number"))?;
    Ok(Some((number, at + 1 + cr + 2)))
}

/// Splits one REPL line (without its newline) into argument spans: words separated by spaces
/// or tabs; a word in double quotes may hold spaces (no escapes). Spans are relative to `line`.
pub fn parse_line(line: &[u8], spans: &mut Vec<(u32, u32)>) -> Result<(), ClientError> {
    spans.clear();
    let mut at = 0;
    while at < line.len() {
        while at < line.len() && (line[at] == b' ' || line[at] == b'\t' || line[at] == b'\r') {
            at += 1;
        }
        if at == line.len() {
            break;
        }
        if spans.len() == ARGS_MAX {
            return Err(ClientError::TooLarge("too many arguments"));
        }
        if line[at] == b'"' {
            let start = at + 1;
            let Some(length) = line[start..].iter().position(|&b| b == b'"') else {
                return Err(ClientError::Protocol("unterminated quote"));
            };
            spans.push((start as u32, (start + length) as u32));
            at = start + length + 1;
        } else {
            let start = at;
            while at < line.len() && !matches!(line[at], b' ' | b'\t' | b'\r') {
                at += 1;
            }
            spans.push((start as u32, at as u32));
        }
    }
    Ok(())
}

/// A reply to a client; rendered as RESP2 or as REPL text by the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Ok,
    /// A simple status such as `PONG`.
    Status(&'a str),
    /// An error; by convention it starts with an upper-case code (`ERR ...`).
    Error(&'a str),
    Integer(i64),
    /// A bulk string, or nil.
    Bulk(Option<&'a [u8]>),
    /// An array header: the next `n` replies to this client are its items.
    Array(usize),
}

impl Reply<'_> {
    /// Bytes `encode_resp` writes, at most.
    pub fn resp_len(&self) -> usize {
        match self {
            Reply::Ok => 5,
            Reply::Status(text) | Reply::Error(text) => 3 + text.len(),
            Reply::Integer(_) | Reply::Array(_) => 24,
            Reply::Bulk(None) => 5,
            Reply::Bulk(Some(bytes)) => 24 + bytes.len(),
        }
    }

    /// Writes the RESP2 form at the start of `out` and returns its length; `out` must hold
    /// `resp_len()` bytes.
    pub fn encode_resp(&self, out: &mut [u8]) -> usize {
        let capacity = out.len();
        let mut cursor = std::io::Cursor::new(out);
        let _ = match self {
            Reply::Ok => cursor.write_all(b"+OK\r\n"),
            Reply::Status(text) => write!(cursor, "+{text}\r\n"),
            Reply::Error(text) => write!(cursor, "-{text}\r\n"),
            Reply::Integer(value) => write!(cursor, ":{value}\r\n"),
            Reply::Bulk(None) => cursor.write_all(b"$-1\r\n"),
            Reply::Bulk(Some(bytes)) => write!(cursor, "${}\r\n", bytes.len())
                .and_then(|()| cursor.write_all(bytes))
                .and_then(|()| cursor.write_all(b"\r\n")),
            Reply::Array(count) => write!(cursor, "*{count}\r\n"),
        };
        let written = cursor.position() as usize;
        assert!(written <= capacity);
        written
    }

    /// Writes the REPL's text form (one line, except that an array header writes nothing).
    pub fn encode_text(&self, out: &mut Vec<u8>) {
        let _ = match self {
            Reply::Ok => writeln!(out, "OK"),
            Reply::Status(text) => writeln!(out, "{text}"),
            Reply::Error(text) => writeln!(out, "{text}"),
            Reply::Integer(value) => writeln!(out, "(integer) {value}"),
            Reply::Bulk(None) => writeln!(out, "(nil)"),
            Reply::Bulk(Some(bytes)) => writeln!(out, "\"{}\"", bytes.escape_ascii()),
            Reply::Array(_) => Ok(()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(input: &[u8]) -> Vec<Vec<u8>> {
        let mut spans = Vec::new();
        let used = parse_resp(input, &mut spans).unwrap().unwrap();
        assert_eq!(used, input.len());
        spans
            .iter()
            .map(|&(a, b)| input[a as usize..b as usize].to_vec())
            .collect()
    }

    #[test]
    fn parses_requests_and_pipelines() {
        assert_eq!(args(b"*1\r\n$4\r\nPING\r\n"), vec![b"PING".to_vec()]);
        assert_eq!(
            args(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"),
            vec![b"SET".to_vec(), b"k".to_vec(), b"".to_vec()]
        );
        let two = b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut spans = Vec::new();
        let first = parse_resp(two, &mut spans).unwrap().unwrap();
        assert_eq!(first, 14);
        assert_eq!(
            parse_resp(&two[first..], &mut spans).unwrap(),
            Some(two.len() - first)
        );
    }

    #[test]
    fn truncation_at_every_byte_waits() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        let mut spans = Vec::new();
        for cut in 0..input.len() {
            assert_eq!(parse_resp(&input[..cut], &mut spans), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn hostile_headers_are_refused_before_allocating() {
        let mut spans = Vec::new();
        let cases: [(&[u8], &str); 8] = [
            (b"*1000000000\r\n", "too many"),
            (b"*1\r\n$1073741824\r\n", "above"),
            (b"*-5\r\n", "negative"),
            (b"*1\r\n$-1\r\n", "null"),
            (b"GET k\r\n", "expected '*'"),
            (b"*1\r\n:5\r\n", "expected '$'"),
            (b"*1\r\n$2\r\nabXY", "CRLF"),
            (b"*12345678901234567890123456789\r\n", "long"),
        ];
        for (input, needle) in cases {
            let error = parse_resp(input, &mut spans).unwrap_err().to_string();
            assert!(error.contains(needle), "{input:?}: {error}");
        }
    }

    #[test]
    fn lines_split_on_spaces_and_quotes() {
        let mut spans = Vec::new();
        let line = b"  SET  greeting \"hello world\"\t";
        parse_line(line, &mut spans).unwrap();
        let words: Vec<&[u8]> = spans
            .iter()
            .map(|&(a, b)| &line[a as usize..b as usize])
            .collect();
        assert_eq!(words, vec![&b"SET"[..], b"greeting", b"hello world"]);
        assert!(parse_line(b"SET k \"open", &mut spans).is_err());
        parse_line(b"   ", &mut spans).unwrap();
        assert!(spans.is_empty());
    }

    #[test]
    fn replies_render_as_resp_and_text() {
        let cases: [(Reply, &[u8], &str); 7] = [
            (Reply::Ok, b"+OK\r\n", "OK\n"),
            (Reply::Status("PONG"), b"+PONG\r\n", "PONG\n"),
            (Reply::Error("ERR nope"), b"-ERR nope\r\n", "ERR nope\n"),
            (Reply::Integer(-3), b":-3\r\n", "(integer) -3\n"),
            (Reply::Bulk(None), b"$-1\r\n", "(nil)\n"),
            (Reply::Bulk(Some(b"a\nb")), b"$3\r\na\nb\r\n", "\"a\\nb\"\n"),
            (Reply::Array(2), b"*2\r\n", ""),
        ];
        for (reply, resp, text) in cases {
            let mut out = vec![0; reply.resp_len()];
            let length = reply.encode_resp(&mut out);
            assert_eq!(&out[..length], resp);
            let mut line = Vec::new();
            reply.encode_text(&mut line);
            assert_eq!(String::from_utf8(line).unwrap(), text);
        }
    }
}
