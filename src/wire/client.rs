//! Client-facing formats: commands in (RESP2 arrays of bulk strings, Redis inline commands, or
//! REPL lines) and replies out (RESP2, or the REPL's plain text). Every form of a command
//! becomes one `Command` — a view of argument spans over the input buffer — so a role never
//! sees the syntax.
//!
//! Inline commands (`PING\r\n`, what telnet, nc and redis-benchmark's `PING_INLINE` send) and
//! REPL lines are split as Redis splits them (`sdssplitargs`): words separated by white space;
//! double quotes with `\n \r \t \b \a \\ \"` and `\xHH` escapes; single quotes with `\'`; a
//! closing quote must be followed by white space or the end. Escapes are undone in place (the
//! result is never longer), so a command still borrows the input buffer.
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
    /// Malformed: a bad header, a missing CRLF, unbalanced quotes.
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

/// Parses one request at the start of `input` — a RESP2 array when it starts with `*`, else an
/// inline command ending at `\n` — writing its argument spans (relative to `input`) into
/// `spans`. Returns the bytes it occupies, `None` if it is not complete yet. An inline line may
/// be rewritten in place (escapes undone). An empty line is a request with no arguments.
pub fn parse_request(
    input: &mut [u8],
    spans: &mut Vec<(u32, u32)>,
) -> Result<Option<usize>, ClientError> {
    if input.first() == Some(&b'*') {
        return parse_resp(input, spans);
    }
    spans.clear();
    let searched = input.len().min(LINE_BYTES_MAX + 1);
    let Some(newline) = input[..searched].iter().position(|&b| b == b'\n') else {
        if input.len() > LINE_BYTES_MAX {
            return Err(ClientError::TooLarge("too big inline request"));
        }
        return Ok(None);
    };
    split_args(&mut input[..newline], spans)?;
    Ok(Some(newline + 1))
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

/// Splits one line (an inline command or a REPL line, without its newline) into arguments the
/// way Redis does (see the module doc), undoing escapes in place; the spans point into `line`
/// as rewritten.
pub fn split_args(line: &mut [u8], spans: &mut Vec<(u32, u32)>) -> Result<(), ClientError> {
    spans.clear();
    let (mut read, mut write) = (0, 0);
    loop {
        while read < line.len() && line[read].is_ascii_whitespace() {
            read += 1;
        }
        if read == line.len() {
            return Ok(());
        }
        if spans.len() == ARGS_MAX {
            return Err(ClientError::TooLarge("too many arguments"));
        }
        let start = write;
        let mut quote: Option<u8> = None;
        loop {
            let Some(&byte) = line.get(read) else {
                if quote.is_some() {
                    return Err(ClientError::Protocol("unbalanced quotes in request"));
                }
                break;
            };
            match quote {
                None if byte.is_ascii_whitespace() => break,
                None if byte == b'"' || byte == b'\'' => {
                    quote = Some(byte);
                    read += 1;
                    continue;
                }
                None => read += 1,
                Some(closing) if byte == closing => {
                    read += 1;
                    if line.get(read).is_some_and(|b| !b.is_ascii_whitespace()) {
                        return Err(ClientError::Protocol("unbalanced quotes in request"));
                    }
                    quote = None;
                    continue;
                }
                Some(b'"') if byte == b'\\' && read + 1 < line.len() => {
                    let (value, used) = unescape(&line[read + 1..]);
                    line[write] = value;
                    write += 1;
                    read += 1 + used;
                    continue;
                }
                Some(b'\'') if byte == b'\\' && line.get(read + 1) == Some(&b'\'') => {
                    line[write] = b'\'';
                    write += 1;
                    read += 2;
                    continue;
                }
                Some(_) => read += 1,
            }
            line[write] = byte;
            write += 1;
        }
        spans.push((start as u32, write as u32));
    }
}

/// The byte a `\` escape inside double quotes stands for, and how many bytes after the `\` it
/// used: `\xHH` (two hex digits), `\n \r \t \b \a`, else the character itself.
fn unescape(after: &[u8]) -> (u8, usize) {
    let hex = |b: u8| (b as char).to_digit(16);
    if let [b'x', high, low, ..] = *after
        && let (Some(high), Some(low)) = (hex(high), hex(low))
    {
        return ((high * 16 + low) as u8, 3);
    }
    let value = match after[0] {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 8,
        b'a' => 7,
        other => other,
    };
    (value, 1)
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
    /// Text made of `\r\n`-ended lines (INFO): a bulk string in RESP, the lines themselves in
    /// the REPL (as redis-cli prints INFO).
    Lines(&'a [u8]),
}

impl Reply<'_> {
    /// Bytes `encode_resp` writes, at most.
    pub fn resp_len(&self) -> usize {
        match self {
            Reply::Ok => 5,
            Reply::Status(text) | Reply::Error(text) => 3 + text.len(),
            Reply::Integer(_) | Reply::Array(_) => 24,
            Reply::Bulk(None) => 5,
            Reply::Bulk(Some(bytes)) | Reply::Lines(bytes) => 24 + bytes.len(),
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
            Reply::Bulk(Some(bytes)) | Reply::Lines(bytes) => {
                write!(cursor, "${}\r\n", bytes.len())
                    .and_then(|()| cursor.write_all(bytes))
                    .and_then(|()| cursor.write_all(b"\r\n"))
            }
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
            Reply::Lines(text) => {
                for line in text.split(|&b| b == b'\n') {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if !line.is_empty() {
                        out.extend_from_slice(line);
                        out.push(b'\n');
                    }
                }
                Ok(())
            }
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
            (b"*1\r\n$1\r\nab\r\n", "CRLF"),
            (b"*1\r\n:5\r\n", "expected '$'"),
            (b"*1\r\n$2\r\nabXY", "CRLF"),
            (b"*12345678901234567890123456789\r\n", "long"),
        ];
        for (input, needle) in cases {
            let error = parse_resp(input, &mut spans).unwrap_err().to_string();
            assert!(error.contains(needle), "{input:?}: {error}");
        }
    }

    fn split(line: &str) -> Result<Vec<Vec<u8>>, ClientError> {
        let mut bytes = line.as_bytes().to_vec();
        let mut spans = Vec::new();
        split_args(&mut bytes, &mut spans)?;
        Ok(spans
            .iter()
            .map(|&(a, b)| bytes[a as usize..b as usize].to_vec())
            .collect())
    }

    /// The cases follow Redis's `sdssplitargs` (what redis-cli and inline commands use).
    #[test]
    fn lines_split_as_redis_splits_them() {
        let words = |list: &[&str]| -> Vec<Vec<u8>> {
            list.iter().map(|w| w.as_bytes().to_vec()).collect()
        };
        assert_eq!(
            split("  SET  greeting \"hello world\"\t").unwrap(),
            words(&["SET", "greeting", "hello world"])
        );
        assert_eq!(
            split(r#"set k "a\nb\x41\"c\\" 'it\'s' "" ''"#).unwrap(),
            words(&["set", "k", "a\nbA\"c\\", "it's", "", ""])
        );
        assert!(
            split(r#"a"b c"d"#).is_err(),
            "a closing quote needs a space after"
        );
        assert_eq!(split(r#"x"b c""#).unwrap(), words(&["xb c"]));
        assert_eq!(split(r#""\xZZ""#).unwrap(), words(&["xZZ"]));
        for bad in [r#"SET k "open"#, "SET k 'open", r#""a"b"#] {
            let error = split(bad).unwrap_err().to_string();
            assert!(error.contains("unbalanced quotes"), "{bad}: {error}");
        }
        assert!(split("   ").unwrap().is_empty());
    }

    #[test]
    fn inline_requests_end_at_a_newline() {
        let mut spans = Vec::new();
        let mut input = b"PING\r\nSET a \"b c\"\nGET a\r\n*1\r\n$4\r\nPING\r\n".to_vec();
        let mut lines = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let used = parse_request(&mut input[at..], &mut spans)
                .unwrap()
                .unwrap();
            let args: Vec<Vec<u8>> = spans
                .iter()
                .map(|&(a, b)| input[at + a as usize..at + b as usize].to_vec())
                .collect();
            lines.push(args);
            at += used;
        }
        let words = |list: &[&str]| -> Vec<Vec<u8>> {
            list.iter().map(|w| w.as_bytes().to_vec()).collect()
        };
        assert_eq!(
            lines,
            vec![
                words(&["PING"]),
                words(&["SET", "a", "b c"]),
                words(&["GET", "a"]),
                words(&["PING"])
            ]
        );
        let mut partial = b"GET a".to_vec();
        assert_eq!(parse_request(&mut partial, &mut spans), Ok(None));
        let mut long = vec![b'a'; LINE_BYTES_MAX + 1];
        let error = parse_request(&mut long, &mut spans).unwrap_err();
        assert_eq!(error, ClientError::TooLarge("too big inline request"));
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
