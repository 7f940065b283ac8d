//! A minimal keep-alive HTTP/1.1 server on a core's executor, for the bench tools: each
//! connection reuses its buffers, so serving a synthetic fleet stays cheap next to the agent
//! under test.

use std::rc::Rc;
use std::time::Duration;

use crate::runtime::{self, AsyncReadRent, AsyncWriteRentExt, IoBufMut, TcpListener, TcpStream};

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub content_type: &'a str,
    /// The `Accept` header (empty when absent).
    pub accept: &'a str,
    pub body: &'a [u8],
}

/// The answer to a request; the body is written by the handler into the buffer it is given.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Wait this long before answering (simulated receiver latency).
    pub delay: Duration,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn ok(content_type: &'static str) -> Reply {
        Reply {
            status: 200,
            content_type,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }
}

pub type Handler = Rc<dyn Fn(&Request<'_>, &mut Vec<u8>) -> Reply>;

/// Accepts connections forever, serving each on its own task.
pub async fn serve(listener: TcpListener, handler: Handler) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                runtime::spawn(connection(stream, handler.clone()));
            }
            Err(_) => runtime::sleep(Duration::from_millis(10)).await,
        }
    }
}

const MAX_HEAD: usize = 64 * 1024;

async fn connection(mut stream: TcpStream, handler: Handler) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut body = Vec::new();
    let mut payload = Vec::new();
    let mut response: Vec<u8> = Vec::new();
    loop {
        // Read until a whole request (head and Content-Length body) is buffered.
        let (head_len, content_len, method, path, close, content_type, accept) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let cl = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| {
                            std::str::from_utf8(h.value)
                                .ok()?
                                .trim()
                                .parse::<usize>()
                                .ok()
                        })
                        .unwrap_or(0);
                    let close = req.version == Some(0)
                        || req.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("connection")
                                && h.value.trim_ascii().eq_ignore_ascii_case(b"close")
                        });
                    let content_type = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .unwrap_or("")
                        .to_string();
                    let accept = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("accept"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .unwrap_or("")
                        .to_string();
                    break (
                        n,
                        cl,
                        req.method.unwrap_or("").to_string(),
                        req.path.unwrap_or("/").to_string(),
                        close,
                        content_type,
                        accept,
                    );
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return,
            }
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        while buf.len() < head_len + content_len {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        body.clear();
        body.extend_from_slice(&buf[head_len..head_len + content_len]);
        buf.drain(..head_len + content_len);

        payload.clear();
        let reply = handler(
            &Request {
                method: &method,
                path: &path,
                content_type: &content_type,
                accept: &accept,
                body: &body,
            },
            &mut payload,
        );
        if !reply.delay.is_zero() {
            runtime::sleep(reply.delay).await;
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}",
            reply.status,
            reason(reply.status),
            reply.content_type,
            payload.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        for (k, v) in &reply.headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        response.clear();
        response.extend_from_slice(head.as_bytes());
        response.extend_from_slice(&payload);
        let (res, back) = stream.write_all(std::mem::take(&mut response)).await;
        response = back;
        if res.is_err() || close {
            return;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    if buf.capacity() - buf.len() < 16 * 1024 {
        buf.reserve(buf.capacity().max(16 * 1024));
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let owned = std::mem::take(buf);
    let (res, slice) = stream.read(owned.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    matches!(res, Ok(n) if n > 0)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
