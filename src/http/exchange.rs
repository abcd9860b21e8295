//! One connection's HTTP/1.x exchange, without its socket: the bytes that
//! came in, the request heads parsed from them (with `httparse`), and the
//! one response waiting to go out. The server moves bytes between this and
//! the socket; the tests drive it with arbitrary bytes in arbitrary chunks.
//!
//! It holds at most `max_head` received bytes: it asks for no more than
//! that ([`Exchange::room`]), and a head that does not fit is answered 431.
//! It holds one response at a time: while one waits to be sent it asks for
//! no input, so a client pipelining requests without reading the answers
//! fills its own socket buffers, not the master's memory. Nothing here
//! takes a request body, so a request that announces one is refused and
//! the connection closed: its body could not be told from the next request.

use std::io;

use super::{Request, Response};

/// What the exchange needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A response waits to be written: [`Exchange::output`].
    Write,
    /// A whole request head may be buffered: [`Exchange::answer`].
    Answer,
    /// More input: up to [`Exchange::room`] bytes.
    Read,
    /// Nothing more: close the connection.
    Close,
}

pub struct Exchange {
    /// Received and not yet answered: at most `max_head` bytes.
    input: Vec<u8>,
    max_head: usize,
    /// The response being sent, and how much of it has been.
    out: Vec<u8>,
    sent: usize,
    /// Close once `out` is sent.
    close_after: bool,
    /// The peer has sent all it will (a read returned 0).
    peer_done: bool,
    /// `input` was parsed since it last grew, and holds no whole head.
    incomplete: bool,
}

/// The most header lines a request may have (more: 431).
const MAX_HEADERS: usize = 64;

impl Exchange {
    pub fn new(max_head: usize) -> Exchange {
        Exchange {
            input: Vec::new(),
            max_head: max_head.max(1),
            out: Vec::new(),
            sent: 0,
            close_after: false,
            peer_done: false,
            incomplete: true,
        }
    }

    pub fn next(&self) -> Next {
        if self.sent < self.out.len() {
            Next::Write
        } else if self.close_after {
            Next::Close
        } else if !self.incomplete {
            Next::Answer
        } else if self.peer_done {
            Next::Close
        } else {
            Next::Read
        }
    }

    /// How many bytes may be received now: none unless input is what the
    /// exchange waits for, and never past `max_head` buffered.
    pub fn room(&self) -> usize {
        match self.next() {
            Next::Read => self.max_head - self.input.len(),
            _ => 0,
        }
    }

    /// How many bytes are buffered, received and not yet answered.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.input.len()
    }

    /// Receives input through `read`, which fills a buffer of at most
    /// [`Exchange::room`] bytes; a read of 0 bytes is the peer's end.
    pub fn read_with(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let room = self.room();
        if room == 0 {
            return Ok(0);
        }
        let had = self.input.len();
        self.input.resize(had + room, 0);
        let result = read(&mut self.input[had..]);
        let n = *result.as_ref().unwrap_or(&0);
        self.input.truncate(had + n.min(room));
        match result {
            Ok(0) => self.peer_done = true,
            Ok(_) => self.incomplete = false,
            Err(_) => {}
        }
        result
    }

    /// Takes what fits of `bytes` (see [`Exchange::room`]); returns how
    /// many bytes it took.
    #[cfg(test)]
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        if n > 0 {
            let _ = self.read_with(|buf| {
                buf[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            });
        }
        n
    }

    /// The peer has sent its last byte.
    #[cfg(test)]
    pub fn end_of_input(&mut self) {
        self.peer_done = true;
    }

    /// The part of the response not yet sent.
    pub fn output(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` more bytes of the output were sent.
    pub fn wrote(&mut self, n: usize) {
        self.sent = (self.sent + n).min(self.out.len());
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// Whether the peer has sent all it will.
    pub fn peer_done(&self) -> bool {
        self.peer_done
    }

    /// Parses the buffered input: a whole head is answered (by `site`, for
    /// a GET or HEAD), a head too long for `max_head` gets 431, a malformed
    /// one 400; a partial one waits for more input. Returns whether a
    /// response was made.
    pub fn answer(&mut self, site: &mut dyn FnMut(&Request) -> Response) -> bool {
        if self.next() != Next::Answer {
            return false;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&self.input) {
            Ok(httparse::Status::Complete(len)) => {
                let (response, head_only, close) = handle(&req, site);
                let close = close || (self.peer_done && len == self.input.len());
                self.respond(&response, head_only, close);
                self.input.drain(..len);
                self.incomplete = self.input.is_empty();
                true
            }
            Ok(httparse::Status::Partial) if self.input.len() < self.max_head => {
                self.incomplete = true;
                false
            }
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                self.fail(431, "request head too large\n");
                true
            }
            Err(_) => {
                self.fail(400, "malformed request\n");
                true
            }
        }
    }

    /// An error answer, after which the connection closes: what follows
    /// the bad bytes cannot be trusted to start a request.
    fn fail(&mut self, status: u16, body: &str) {
        let response = Response::text(status, body);
        self.respond(&response, false, true);
        self.input.clear();
        self.incomplete = true;
    }

    fn respond(&mut self, response: &Response, head_only: bool, close: bool) {
        encode(response, head_only, close, &mut self.out);
        self.sent = 0;
        self.close_after = close;
    }
}

/// What a parsed request gets: the response, whether only its head is
/// sent (HEAD), and whether the connection closes after it.
fn handle(
    req: &httparse::Request,
    site: &mut dyn FnMut(&Request) -> Response,
) -> (Response, bool, bool) {
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let http10 = req.version == Some(0);
    let mut keep_alive = false;
    let mut close = false;
    let mut body = false;
    let mut accepts_html = false;
    for header in req.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            // Anything but a plain 0 announces a body (or is malformed).
            body |= header.value.trim_ascii().iter().any(|&b| b != b'0')
                || header.value.trim_ascii().is_empty();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            body = true;
        } else if name.eq_ignore_ascii_case("accept") {
            accepts_html |= contains_ignore_case(header.value, b"text/html");
        }
    }
    // HTTP/1.1 keeps the connection unless told to close; 1.0 closes it
    // unless asked to keep it.
    let close = if http10 { close || !keep_alive } else { close };
    if method != "GET" && method != "HEAD" {
        // Its body, if any, is still coming: close after the answer.
        return (Response::not_allowed(), false, close || body);
    }
    if body {
        return (
            Response::text(400, "a GET or HEAD request takes no body\n"),
            false,
            true,
        );
    }
    let request = Request {
        method,
        path: path_of(target),
        accepts_html,
    };
    (site(&request), method == "HEAD", close)
}

/// The path of a request target, without its query; an absolute URL's
/// (`http://host/path?q`) too.
fn path_of(target: &str) -> &str {
    let mut path = target;
    if let Some(at) = path.find("://") {
        let rest = &path[at + 3..];
        path = rest.find('/').map_or("/", |slash| &rest[slash..]);
    }
    path.split(['?', '#']).next().unwrap_or(path)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The response in HTTP/1.1's wire form, into `out`.
fn encode(response: &Response, head_only: bool, close: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if let Some(allow) = response.allow {
        let _ = write!(out, "Allow: {allow}\r\n");
    }
    // Said either way: an HTTP/1.0 client closes unless told otherwise.
    out.extend_from_slice(match close {
        true => b"Connection: close\r\n\r\n",
        false => b"Connection: keep-alive\r\n\r\n",
    });
    if !head_only {
        out.extend_from_slice(&response.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn site(req: &Request) -> Response {
        Response {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: format!("{} {} html={}\n", req.method, req.path, req.accepts_html).into_bytes(),
            allow: None,
        }
    }

    /// Feeds `input` whole, then its end; returns everything written and
    /// whether the exchange asked to close.
    fn run(max_head: usize, input: &[u8]) -> (String, bool) {
        let mut ex = Exchange::new(max_head);
        let mut rest = input;
        let mut out = Vec::new();
        let mut ended = false;
        for _ in 0..10_000 {
            match ex.next() {
                Next::Write => {
                    out.extend_from_slice(ex.output());
                    let n = ex.output().len();
                    ex.wrote(n);
                }
                Next::Answer => drop(ex.answer(&mut site)),
                Next::Read if rest.is_empty() => {
                    ex.end_of_input();
                    ended = true;
                }
                Next::Read => rest = &rest[ex.receive(rest)..],
                Next::Close => return (String::from_utf8_lossy(&out).into_owned(), !ended),
            }
        }
        panic!("no progress");
    }

    #[test]
    fn keep_alive_by_version_and_header() {
        let (out, closed) = run(8192, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Connection: keep-alive\r\n"), "{out}");
        assert!(out.ends_with("GET /a html=false\n"), "{out}");
        assert!(!closed);
        let (out, closed) = run(8192, b"GET /a HTTP/1.0\r\n\r\n");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(closed);
        let (out, closed) = run(8192, b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(out.contains("Connection: keep-alive\r\n"), "{out}");
        assert!(!closed);
        let (_, closed) = run(8192, b"GET /a HTTP/1.1\r\nConnection: foo, close\r\n\r\n");
        assert!(closed);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (out, _) = run(
            8192,
            b"GET /1 HTTP/1.1\r\n\r\nHEAD /2?x=y HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\nAccept: text/HTML\r\n\r\n",
        );
        let one = out.find("GET /1 html=false").unwrap();
        let three = out.find("GET /3 html=true").unwrap();
        assert!(one < three, "{out}");
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
        // HEAD: the length of the body, not the body.
        assert!(!out.contains("HEAD /2"), "{out}");
        assert!(out.contains("Content-Length: 19\r\n"), "{out}");
    }

    #[test]
    fn other_methods_bodies_garbage_and_long_heads() {
        let (out, closed) = run(8192, b"DELETE /x HTTP/1.1\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(out.contains("Allow: GET, HEAD\r\n"), "{out}");
        assert!(!closed);
        let (out, closed) = run(8192, b"POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
        assert!(closed);
        let (out, closed) = run(8192, b"GET /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(closed);
        let (out, closed) = run(
            8192,
            b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(closed);
        let (out, _) = run(8192, b"GET /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        let (out, closed) = run(8192, b"\x00\x01garbage\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        assert!(out.contains("Connection: close\r\n"), "{out}");
        assert!(closed);
        let long = format!("GET /x HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let (out, closed) = run(8192, long.as_bytes());
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(closed);
        let many: String = (0..100).map(|i| format!("X{i}: y\r\n")).collect();
        let (out, _) = run(8192, format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes());
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    }

    #[test]
    fn a_half_sent_request_is_not_answered() {
        let (out, closed) = run(8192, b"GET /x HTTP/1.1\r\nHost");
        assert_eq!(out, "");
        assert!(!closed, "closed because the input ended");
    }

    #[test]
    fn paths_lose_their_query_and_scheme() {
        assert_eq!(path_of("/metrics?x=1"), "/metrics");
        assert_eq!(path_of("http://h:1/status.json?a"), "/status.json");
        assert_eq!(path_of("http://h"), "/");
        assert_eq!(path_of("*"), "*");
    }

    /// A request-like line, or junk, for the property test.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"GET /status HTTP/1.1\r\n\r\n".to_vec()),
            Just(b"HEAD /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec()),
            Just(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec()),
            Just(b"GET /x HTTP/1.1\r\nHost: a\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"PUT /x HTTP/1.1\r\n\r\n".to_vec()),
            "[A-Za-z/: \r\n]{0,40}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(b'a'..=b'z', 0..3000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes in arbitrary chunks: never a panic, never more
        /// than `max_head` buffered, never stuck (something to do at every
        /// step, and the end reached once the input ends), and every
        /// output a whole HTTP response.
        #[test]
        fn any_input_is_answered_or_closed(
            pieces in proptest::collection::vec(piece(), 0..12),
            chunks in proptest::collection::vec(1usize..700, 1..40),
            max_head in prop_oneof![Just(8192usize), 16usize..600],
        ) {
            let input: Vec<u8> = pieces.concat();
            let mut ex = Exchange::new(max_head);
            let mut rest = &input[..];
            let mut out = Vec::new();
            let mut chunk = chunks.iter().cycle();
            let mut steps = 0;
            loop {
                steps += 1;
                prop_assert!(steps < 100_000, "no progress");
                prop_assert!(ex.buffered() <= max_head);
                match ex.next() {
                    Next::Write => {
                        // The peer takes an arbitrary part of it.
                        let n = ex.output().len().min(*chunk.next().unwrap());
                        out.extend_from_slice(&ex.output()[..n]);
                        ex.wrote(n);
                    }
                    Next::Answer => {
                        let before = ex.buffered();
                        let answered = ex.answer(&mut site);
                        prop_assert!(answered || ex.next() == Next::Read || ex.next() == Next::Close);
                        prop_assert!(ex.buffered() <= before);
                    }
                    Next::Read => {
                        prop_assert!(ex.room() > 0, "waits for input it has no room for");
                        if rest.is_empty() {
                            ex.end_of_input();
                        } else {
                            let n = rest.len().min(*chunk.next().unwrap());
                            let took = ex.receive(&rest[..n]);
                            prop_assert!(took > 0);
                            rest = &rest[took..];
                        }
                    }
                    Next::Close => break,
                }
            }
            // Whole responses, each with its length.
            let mut text = &out[..];
            while !text.is_empty() {
                prop_assert!(text.starts_with(b"HTTP/1.1 "));
                let end = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = std::str::from_utf8(&text[..end]).unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .parse()
                    .unwrap();
                // A HEAD's answer has no body: the next response, or the
                // end, follows its head.
                let body = if text.len() == end || text[end..].starts_with(b"HTTP/1.1 ") {
                    0
                } else {
                    len
                };
                prop_assert!(text.len() >= end + body);
                text = &text[end + body..];
            }
        }
    }
}
