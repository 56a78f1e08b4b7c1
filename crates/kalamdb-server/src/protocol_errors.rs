//! [`JsonProtocolErrors`]: gives hyper's own answers to requests it cannot parse the one JSON
//! error body.
//!
//! A request whose request line or headers are not valid HTTP/1.1 (a `Content-Length` that is not
//! a number, say), whose URI is too long or whose headers are too many never becomes a request:
//! hyper answers it itself, 400, 414 or 431 with an empty body, and closes the connection. No
//! layer sees it, and hyper 1.x has no hook for that answer (hyperium/hyper#3225). So the
//! connection's IO is wrapped: when hyper writes exactly that answer, the wrapper sends the same
//! status and headers with the JSON body and its length instead, plus a new `x-request-id` (the
//! client's own could not be read), and logs the refusal at `info` with that id and the peer
//! address, as the request log would have. Everything else passes through untouched; the check
//! costs one comparison of a response's first bytes.
//!
//! The match is on the bytes hyper 1.x writes for these errors. Were a later hyper to word them
//! differently, its answer would go out unchanged, and the tests that send such requests
//! (`tests/tests/socket.rs`) would fail.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use kalamdb_http::{ApiError, ErrorCode};

/// The start of every answer hyper makes up for a request it could not parse.
const HYPER_ERROR_HEAD: &[u8] = b"HTTP/1.1 4";

/// The headers hyper sends with such an answer, before its `date` line.
const HYPER_ERROR_HEADERS: &[u8] = b"connection: close\r\ncontent-length: 0\r\n";

/// hyper's status line for each protocol error, and the code and message the client gets.
const PROTOCOL_ERRORS: [(&[u8], ErrorCode, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        ErrorCode::MalformedRequest,
        "the request is not valid HTTP/1.1: check its request line and headers \
         (one Content-Length, a number; a Transfer-Encoding that ends in chunked)",
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        ErrorCode::UriTooLong,
        "the request's path and query are too long; shorten them",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        ErrorCode::HeadersTooLarge,
        "the request's headers are too many or too large; send fewer",
    ),
];

/// A connection's IO that rewrites hyper's empty protocol-error answers into JSON ones.
#[derive(Debug)]
pub struct JsonProtocolErrors<I> {
    inner: I,
    /// The connection's peer, for the log line of a refusal.
    peer: SocketAddr,
    /// An answer being sent in place of hyper's: its bytes, how many are sent, and how many of
    /// hyper's bytes it stands for.
    replacing: Option<Replacement>,
}

#[derive(Debug)]
struct Replacement {
    bytes: Vec<u8>,
    sent: usize,
    stands_for: usize,
}

impl Replacement {
    /// The answer to send instead of `written`, when that is hyper's protocol-error answer; the
    /// refusal is logged here, once, since a replacement is made once per answer.
    fn of(written: &[u8], peer: SocketAddr) -> Option<Self> {
        let refusal = Refusal::of(written)?;
        let request_id = uuid::Uuid::new_v4().hyphenated().to_string();
        tracing::info!(
            status = refusal.code.status().as_u16(),
            error = refusal.code.as_str(),
            %request_id,
            %peer,
            "refused a request that is not valid HTTP/1.1",
        );
        Some(Self {
            bytes: refusal.answer(&request_id),
            sent: 0,
            stands_for: written.len(),
        })
    }
}

impl<I> JsonProtocolErrors<I> {
    /// Wraps the IO of a connection from `peer`.
    pub fn new(inner: I, peer: SocketAddr) -> Self {
        Self {
            inner,
            peer,
            replacing: None,
        }
    }
}

/// One of hyper's protocol-error answers, recognised.
#[derive(Debug)]
struct Refusal<'a> {
    status_line: &'static [u8],
    code: ErrorCode,
    message: &'static str,
    /// hyper's `date` line, if it sent one, and the blank line that ends its head.
    end_of_head: &'a [u8],
}

impl<'a> Refusal<'a> {
    /// Recognises `written` as one of hyper's protocol-error answers.
    fn of(written: &'a [u8]) -> Option<Self> {
        if !written.starts_with(HYPER_ERROR_HEAD) {
            return None;
        }
        let (status_line, code, message) = PROTOCOL_ERRORS
            .into_iter()
            .find(|(line, _, _)| written.starts_with(line))?;
        let end_of_head = written[status_line.len()..].strip_prefix(HYPER_ERROR_HEADERS)?;
        // What is left is at most the date line, then the blank line that ends the head: no
        // body, and no header of the app's.
        let date_lines = end_of_head.strip_suffix(b"\r\n")?;
        let one_date_line = date_lines.is_empty()
            || (date_lines.starts_with(b"date: ")
                && date_lines.ends_with(b"\r\n")
                && !date_lines[..date_lines.len() - 2].contains(&b'\n'));
        one_date_line.then_some(Self {
            status_line,
            code,
            message,
            end_of_head,
        })
    }

    /// The JSON answer to send instead, carrying `request_id`.
    fn answer(&self, request_id: &str) -> Vec<u8> {
        let body = ApiError::new(self.code, self.message).body_json();
        let mut answer = Vec::with_capacity(body.len() + 256);
        answer.extend_from_slice(self.status_line);
        answer.extend_from_slice(b"connection: close\r\ncontent-type: application/json\r\n");
        answer.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        answer.extend_from_slice(format!("x-request-id: {request_id}\r\n").as_bytes());
        answer.extend_from_slice(self.end_of_head);
        answer.extend_from_slice(&body);
        answer
    }
}

impl<I: Write + Unpin> JsonProtocolErrors<I> {
    /// Sends `replacement`; once it is all out, reports hyper's bytes as written. A write that
    /// returns Pending is retried by hyper with the same bytes, so the rest waits in `replacing`.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        mut replacement: Replacement,
    ) -> Poll<io::Result<usize>> {
        while replacement.sent < replacement.bytes.len() {
            let unsent = &replacement.bytes[replacement.sent..];
            match Pin::new(&mut self.inner).poll_write(cx, unsent) {
                Poll::Pending => {
                    self.replacing = Some(replacement);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => replacement.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(replacement.stands_for))
    }
}

/// The one slice with bytes in it, if exactly one has any: hyper's error answer is a head alone.
fn only_filled<'a>(bufs: &'a [io::IoSlice<'_>]) -> Option<&'a [u8]> {
    let mut filled = bufs.iter().filter(|b| !b.is_empty());
    match (filled.next(), filled.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

impl<I: Read + Unpin> Read for JsonProtocolErrors<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: Write + Unpin> Write for JsonProtocolErrors<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let peer = this.peer;
        match this.replacing.take().or_else(|| Replacement::of(buf, peer)) {
            Some(replacement) => this.poll_send(cx, replacement),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let (replacing, peer) = (this.replacing.take(), this.peer);
        match replacing.or_else(|| only_filled(bufs).and_then(|b| Replacement::of(b, peer))) {
            Some(replacement) => this.poll_send(cx, replacement),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Thu, 26 Nov 2026 11:50:06 GMT\r\n";
    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        40000,
    ));

    fn replacement_for(written: &[u8]) -> Option<Vec<u8>> {
        Refusal::of(written).map(|refusal| refusal.answer("test-id"))
    }

    /// `answer` with its request id, which is new for every answer, set to `test-id`.
    fn with_test_id(answer: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let head: Vec<String> = head
            .split("\r\n")
            .map(|line| match line.strip_prefix("x-request-id: ") {
                Some(id) => {
                    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
                    "x-request-id: test-id".to_owned()
                }
                None => line.to_owned(),
            })
            .collect();
        format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
    }

    fn hyper_answer(status_line: &str) -> Vec<u8> {
        format!("{status_line}\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n")
            .into_bytes()
    }

    fn parse(answer: &[u8]) -> (String, serde_json::Value) {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len(), "{text}");
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn each_of_hypers_answers_gets_its_code_and_keeps_its_status_and_date() {
        for (status_line, code) in [
            ("HTTP/1.1 400 Bad Request", "malformed_request"),
            ("HTTP/1.1 414 URI Too Long", "uri_too_long"),
            (
                "HTTP/1.1 431 Request Header Fields Too Large",
                "headers_too_large",
            ),
        ] {
            let answer = replacement_for(&hyper_answer(status_line)).expect(status_line);
            let (head, body) = parse(&answer);
            assert!(head.starts_with(status_line), "{head}");
            assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
            assert!(
                head.contains("\r\ncontent-type: application/json\r\n"),
                "{head}"
            );
            assert!(head.contains("\r\nx-request-id: test-id\r\n"), "{head}");
            assert!(head.ends_with(DATE.trim_end()), "{head}");
            assert_eq!(body["error"], code);
            assert!(!body["message"].as_str().unwrap().is_empty());
        }
    }

    /// A socket that takes at most `step` bytes a write, and is not ready every other time.
    #[derive(Default)]
    struct Trickle {
        written: Vec<u8>,
        step: usize,
        ready: bool,
    }

    impl Write for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.ready = !self.ready;
            if !self.ready {
                return Poll::Pending;
            }
            let n = buf.len().min(self.step);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Writes all of `data` the way hyper does: the same bytes again after Pending, the rest
    /// after a short write. Returns what each write call reported.
    fn write_all(io: &mut JsonProtocolErrors<Trickle>, data: &[u8], vectored: bool) -> Vec<usize> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut done, mut reported) = (0, Vec::new());
        while done < data.len() {
            let rest = &data[done..];
            let poll = if vectored {
                let slices = [io::IoSlice::new(&[]), io::IoSlice::new(rest)];
                Pin::new(&mut *io).poll_write_vectored(&mut cx, &slices)
            } else {
                Pin::new(&mut *io).poll_write(&mut cx, rest)
            };
            if let Poll::Ready(n) = poll {
                let n = n.unwrap();
                reported.push(n);
                done += n;
            }
        }
        reported
    }

    #[test]
    fn a_slow_socket_gets_the_whole_replacement_once_and_hyper_hears_its_bytes_were_sent() {
        let hyper = hyper_answer("HTTP/1.1 431 Request Header Fields Too Large");
        let expected = replacement_for(&hyper).unwrap();
        for vectored in [false, true] {
            let mut io = JsonProtocolErrors::new(
                Trickle {
                    step: 7,
                    ..Trickle::default()
                },
                PEER,
            );
            assert_eq!(write_all(&mut io, &hyper, vectored), [hyper.len()]);
            assert_eq!(
                with_test_id(&io.inner.written),
                expected,
                "vectored: {vectored}"
            );
            // What hyper writes after it (nothing, in practice) is not touched.
            io.inner.written.clear();
            write_all(&mut io, b"more", vectored);
            assert_eq!(io.inner.written, b"more");
        }
    }

    #[test]
    fn other_writes_pass_through_in_the_sockets_own_steps() {
        let app = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let mut io = JsonProtocolErrors::new(
            Trickle {
                step: 10,
                ..Trickle::default()
            },
            PEER,
        );
        assert_eq!(write_all(&mut io, app, false), [10, 10, 10, 10]);
        assert_eq!(io.inner.written, app);
    }

    #[test]
    fn an_answer_without_a_date_is_rewritten_too() {
        let answer = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let (_, body) = parse(&replacement_for(answer).unwrap());
        assert_eq!(body["error"], "malformed_request");
    }

    #[test]
    fn the_apps_own_answers_pass_untouched() {
        let app_error = "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                         x-request-id: 1\r\ncontent-length: 2\r\ndate: x\r\n\r\n{}";
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let with_body = format!(
            "{}{{}}",
            String::from_utf8(hyper_answer("HTTP/1.1 400 Bad Request")).unwrap()
        );
        let extra_header =
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\nx-a: b\r\ndate: x\r\n\r\n";
        let other_status =
            "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let cut_short = "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n";
        for written in [
            app_error,
            ok,
            &with_body,
            extra_header,
            other_status,
            cut_short,
            "",
        ] {
            assert_eq!(replacement_for(written.as_bytes()), None, "{written:?}");
        }
    }
}
