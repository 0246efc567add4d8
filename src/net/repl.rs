//! The REPL: commands from stdin, one per line, split as Redis splits inline commands (quotes
//! and escapes, in place), handed to the role as client `REPL_CLIENT`; replies go to stdout as
//! text, in one write per loop iteration, with a prompt when stdin is a terminal.
//!
//! A pipe or terminal is read without blocking, registered with the poll; a regular file
//! (which epoll cannot watch) is read whole at start, up to `REPL_FILE_BYTES_MAX`. At most
//! `REPL_READ_AHEAD_BYTES` are read before the lines in hand are handled; the rest waits in the
//! pipe. A line longer than `LINE_BYTES_MAX` is answered with an error and skipped. At end of
//! input the last line is handled even without its newline, and the node keeps serving its
//! other clients.

use std::io::{self, Read, Write};

use mio::unix::pipe;
use mio::{Interest, Poll, Token};

use super::{Driver, NetIo};
use crate::info;
use crate::node::{ClientId, Role};
use crate::wire::client::{self, Command, LINE_BYTES_MAX, Reply};

pub(super) const REPL_TOKEN: Token = Token(usize::MAX - 3);
/// The client id of the REPL on stdin.
pub const REPL_CLIENT: ClientId = usize::MAX - 3;
/// Largest stdin read as a regular file (REPL script).
const REPL_FILE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes read from a pipe per `read`.
const REPL_READ_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes read from a pipe before the lines in hand are handled.
const REPL_READ_AHEAD_BYTES: usize = 16 * LINE_BYTES_MAX;
const PROMPT: &[u8] = b"pollen> ";

// A line of the longest allowed length is read whole before reading pauses.
const _: () = assert!(REPL_READ_AHEAD_BYTES > LINE_BYTES_MAX);

pub(super) struct Repl {
    /// None when stdin was a regular file, read whole at start.
    receiver: Option<pipe::Receiver>,
    input: Vec<u8>,
    eof: bool,
    /// Interactive: print a prompt.
    prompt: bool,
    /// Items still due of an array reply (the prompt waits for the last).
    array_items: usize,
    output: Vec<u8>,
}

/// Stdin as a non-blocking pipe registered with the poll, or, for a regular file (which epoll
/// cannot watch), its whole content read now.
pub(super) fn open(poll: &Poll) -> io::Result<Repl> {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    let stdin = io::stdin();
    let prompt = stdin.is_terminal();
    let owned = stdin.as_fd().try_clone_to_owned()?;
    let file = std::fs::File::from(owned);
    if file.metadata()?.is_file() {
        let mut input = Vec::new();
        file.take(REPL_FILE_BYTES_MAX).read_to_end(&mut input)?;
        return Ok(Repl {
            receiver: None,
            input,
            eof: true,
            prompt,
            array_items: 0,
            output: Vec::new(),
        });
    }
    let mut receiver = pipe::Receiver::from(std::os::fd::OwnedFd::from(file));
    receiver.set_nonblocking(true)?;
    let registered = poll
        .registry()
        .register(&mut receiver, REPL_TOKEN, Interest::READABLE);
    let (receiver, eof) = match registered {
        Ok(()) => (Some(receiver), false),
        Err(error) => {
            info!("stdin cannot be watched ({error}); the REPL is off");
            (None, true)
        }
    };
    let mut output = Vec::new();
    if prompt {
        output.extend_from_slice(PROMPT);
    }
    Ok(Repl {
        receiver,
        input: Vec::new(),
        eof,
        prompt,
        array_items: 0,
        output,
    })
}

impl<R: Role> Driver<R> {
    /// Reads what stdin has (until `WouldBlock`), then handles complete lines.
    pub(super) fn read_repl(&mut self) {
        let Some(repl) = &mut self.io.repl else {
            return;
        };
        let Some(receiver) = &mut repl.receiver else {
            return;
        };
        let mut chunk = [0u8; REPL_READ_CHUNK_BYTES];
        loop {
            match receiver.read(&mut chunk) {
                Ok(0) => {
                    repl.eof = true;
                    break;
                }
                Ok(count) => repl.input.extend_from_slice(&chunk[..count]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    info!("stdin: {error}");
                    repl.eof = true;
                    break;
                }
            }
            if repl.input.len() > REPL_READ_AHEAD_BYTES {
                break; // handle what we have first; the rest waits in the pipe
            }
        }
        self.handle_repl();
    }

    /// Hands every complete REPL line to the role (the last one too, at end of input).
    pub(super) fn handle_repl(&mut self) {
        let Some(repl) = &mut self.io.repl else {
            return;
        };
        let mut input = std::mem::take(&mut repl.input);
        let eof = repl.eof;
        let mut spans = std::mem::take(&mut self.io.spans);
        let mut at = 0;
        while at < input.len() && !self.io.stopping {
            let end = match input[at..].iter().position(|&b| b == b'\n') {
                Some(length) => at + length,
                None if eof => input.len(),
                None => break,
            };
            let next = (end + 1).min(input.len());
            self.handle_repl_line(&mut input[at..end], &mut spans);
            at = next;
        }
        if at < input.len() && input.len() - at > LINE_BYTES_MAX {
            let error = "ERR line too long";
            self.role
                .on_client_error(&mut self.io, REPL_CLIENT, error, false);
            at = input.len();
        }
        input.drain(..at);
        self.io.spans = spans;
        if let Some(repl) = &mut self.io.repl {
            repl.input = input;
            if repl.eof && repl.input.is_empty() && repl.receiver.is_some() {
                // End of commands; the node keeps serving its other clients.
                if let Some(mut receiver) = repl.receiver.take() {
                    let _ = self.io.poll.registry().deregister(&mut receiver);
                }
            }
        }
    }

    /// One line (without its newline): a command for the role, an error, or nothing (blank).
    fn handle_repl_line(&mut self, line: &mut [u8], spans: &mut Vec<(u32, u32)>) {
        if line.len() > LINE_BYTES_MAX {
            let error = "ERR line too long";
            self.role
                .on_client_error(&mut self.io, REPL_CLIENT, error, false);
            return;
        }
        match client::split_args(line, spans) {
            Ok(()) if spans.is_empty() => {}
            Ok(()) => {
                let command = Command { data: line, spans };
                self.role.on_client(&mut self.io, REPL_CLIENT, command);
                self.deliver_local();
            }
            Err(error) => {
                let text = format!("ERR {error}");
                self.role
                    .on_client_error(&mut self.io, REPL_CLIENT, &text, false);
            }
        }
    }
}

impl NetIo {
    /// REPL replies go to stdout in one write per iteration.
    pub(super) fn flush_repl(&mut self) {
        let Some(repl) = &mut self.repl else { return };
        if repl.output.is_empty() {
            return;
        }
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&repl.output);
        let _ = stdout.flush();
        repl.output.clear();
    }

    /// A reply as text; the prompt follows the last item of an array.
    pub(super) fn reply_repl(&mut self, reply: &Reply<'_>) -> bool {
        let Some(repl) = &mut self.repl else {
            return false;
        };
        reply.encode_text(&mut repl.output);
        match reply {
            Reply::Array(count) => repl.array_items = *count,
            _ => repl.array_items = repl.array_items.saturating_sub(1),
        }
        if repl.prompt && repl.array_items == 0 {
            repl.output.extend_from_slice(PROMPT);
        }
        true
    }
}
