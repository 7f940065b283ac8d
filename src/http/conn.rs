//! One keep-alive HTTP/1.1 connection on a core's executor.

use std::fmt;
use std::io::Read as _;

use super::framing::{ChunkDecoder, ChunkScanner, Framing, dechunk_in_place, parse_head};
use crate::runtime::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, IoBufMut, TcpStream, TlsConnector, TlsStream,
};

/// A connection: plain TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    async fn write_all(&mut self, buf: Vec<u8>) -> (std::io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(s) => {
                let (r, buf) = s.write_all(buf).await;
                match r {
                    Ok(n) => (s.flush().await.map(|()| n), buf),
                    Err(e) => (Err(e), buf),
                }
            }
        }
    }

    async fn read<T: IoBufMut>(&mut self, buf: T) -> (std::io::Result<usize>, T) {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
        }
    }
}

/// What a TLS connection needs: the shared client configuration and the server name.
#[derive(Clone)]
pub struct TlsTarget {
    pub config: std::sync::Arc<rustls::ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Smallest free space offered to each read.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub enum Error {
    Connect(std::io::Error),
    Io(std::io::Error),
    Protocol(String),
    /// The peer closed the connection before a complete response.
    Closed,
    /// The TLS handshake failed.
    Tls(String),
    BodyTooLarge(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(e) => write!(f, "connect: {e}"),
            Error::Io(e) => write!(f, "{e}"),
            Error::Protocol(m) => f.write_str(m),
            Error::Closed => f.write_str("connection closed before a complete response"),
            Error::Tls(e) => write!(f, "tls: {e}"),
            Error::BodyTooLarge(n) => write!(f, "response body larger than {n} bytes"),
        }
    }
}

impl std::error::Error for Error {}

/// A received response. The body is already de-chunked and, when the server sent
/// `Content-Encoding: gzip`, decompressed.
pub struct Response<'a> {
    pub status: u16,
    /// The status line after the HTTP version: code and reason phrase as the server wrote them.
    pub status_text: &'a str,
    pub content_type: &'a str,
    pub retry_after: Option<&'a str>,
    pub location: Option<&'a str>,
    /// Remote Write 2.0's written counts: samples, histograms, exemplars.
    pub written: [Option<u64>; 3],
    /// Consul's blocking-query index (`X-Consul-Index`).
    pub consul_index: Option<u64>,
    pub body: &'a [u8],
}

pub struct Conn {
    authority: String,
    stream: Option<Stream>,
    tls: Option<TlsTarget>,
    /// An HTTP proxy's `host:port` and the extra header lines of its `CONNECT`.
    proxy: Option<(String, String)>,
    req: Vec<u8>,
    buf: Vec<u8>,
    decoded: Vec<u8>,
    max_body: usize,
    /// The last response's head and body range in `buf`.
    last: Option<(super::HeadInfo, (usize, usize))>,
    /// A response being read as a stream ([`Conn::open_stream`]).
    streaming: Option<BodyStream>,
}

/// A response body read as it arrives.
struct BodyStream {
    stream: Stream,
    framing: Framing,
    chunks: ChunkDecoder,
    /// Body bytes still expected (`Content-Length` framing).
    left: usize,
    /// Received bytes not yet handed on (read together with the head).
    pending: Vec<u8>,
    done: bool,
}

impl Conn {
    pub fn new(authority: String) -> Conn {
        Conn {
            authority,
            stream: None,
            req: Vec::new(),
            buf: Vec::new(),
            decoded: Vec::new(),
            max_body: usize::MAX,
            last: None,
            tls: None,
            proxy: None,
            streaming: None,
        }
    }

    /// Goes through the HTTP proxy at `authority`: requests in absolute form, or a `CONNECT`
    /// tunnel (with `connect_headers`, complete lines) for TLS.
    pub fn with_proxy(mut self, authority: String, connect_headers: String) -> Conn {
        self.proxy = Some((authority, connect_headers));
        self
    }

    /// Speaks TLS on this connection.
    pub fn with_tls(mut self, tls: TlsTarget) -> Conn {
        self.tls = Some(tls);
        self
    }

    /// The largest body accepted, after decompression; a larger one fails the request with
    /// [`Error::BodyTooLarge`].
    pub fn set_max_body(&mut self, max: usize) {
        self.max_body = max;
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The request buffer, cleared: write the whole request (head and body) into it.
    pub fn request_mut(&mut self) -> &mut Vec<u8> {
        self.req.clear();
        &mut self.req
    }

    /// Lends the connection receive buffers (from a pool) for the next round trip.
    pub fn set_buffers(&mut self, buf: Vec<u8>, decoded: Vec<u8>) {
        self.buf = buf;
        self.decoded = decoded;
    }

    /// Takes the receive buffers back (to return them to a pool) once the response is used.
    pub fn take_buffers(&mut self) -> (Vec<u8>, Vec<u8>) {
        self.last = None;
        (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.decoded),
        )
    }

    /// Takes `other`'s last response (and receive buffers) as this connection's: a redirect
    /// followed to another host leaves its answer where the caller looks.
    pub fn adopt_response(&mut self, mut other: Conn) {
        self.buf = std::mem::take(&mut other.buf);
        self.decoded = std::mem::take(&mut other.decoded);
        self.last = other.last.take();
    }

    /// Drops the connection; the next request opens a new one.
    pub fn reset(&mut self) {
        self.stream = None;
    }

    /// Sends the request in the request buffer and reads the whole response. A failure leaves
    /// the connection closed. A reused keep-alive connection that turns out to be closed by the
    /// server is retried once on a fresh connection.
    pub async fn round_trip(&mut self, head_request: bool) -> Result<Response<'_>, Error> {
        self.send(head_request).await?;
        self.response().ok_or(Error::Closed)
    }

    /// [`Self::round_trip`] without borrowing the response: read it with
    /// [`Self::response`] (a caller that may send again, e.g. to follow a redirect).
    pub async fn send(&mut self, head_request: bool) -> Result<(), Error> {
        self.last = None;
        let reused = self.stream.is_some();
        let (head, body_range) = match self.exchange(head_request).await {
            Err(Error::Closed) if reused => self.exchange(head_request).await?,
            Err(e) if reused && is_reset(&e) => self.exchange(head_request).await?,
            other => other?,
        };
        if head.gzip {
            self.decoded.clear();
            let dec = flate2::bufread::GzDecoder::new(&self.buf[body_range.0..body_range.1]);
            // One byte past the limit tells that the body is over it.
            let cap = (self.max_body as u64).saturating_add(1);
            dec.take(cap)
                .read_to_end(&mut self.decoded)
                .map_err(|e| Error::Protocol(format!("gzip: {e}")))?;
            if self.decoded.len() > self.max_body {
                return Err(Error::BodyTooLarge(self.max_body));
            }
        }
        self.last = Some((head, body_range));
        Ok(())
    }

    /// The response to the last successful [`Self::send`].
    pub fn response(&self) -> Option<Response<'_>> {
        let (head, body_range) = self.last.as_ref()?;
        let body: &[u8] = if head.gzip {
            &self.decoded
        } else {
            &self.buf[body_range.0..body_range.1]
        };
        let hdr = |r: Option<(usize, usize)>| {
            r.and_then(|(s, e)| std::str::from_utf8(&self.buf[s..e]).ok())
        };
        // The status line after the version, as Go's `Response.Status` has it ("500 X").
        let line_end = memchr::memchr(b'\n', &self.buf).unwrap_or(0);
        let line = self.buf[..line_end].trim_ascii_end();
        let status_text = line
            .iter()
            .position(|b| *b == b' ')
            .and_then(|i| std::str::from_utf8(line[i + 1..].trim_ascii_start()).ok())
            .unwrap_or("");
        Some(Response {
            status: head.status,
            status_text,
            content_type: hdr(head.content_type).unwrap_or(""),
            retry_after: hdr(head.retry_after),
            location: hdr(head.location),
            written: head.written,
            consul_index: head.consul_index,
            body,
        })
    }

    async fn exchange(
        &mut self,
        head_request: bool,
    ) -> Result<(super::HeadInfo, (usize, usize)), Error> {
        // The stream lives in a local while in use: if this future is dropped (timeout), the
        // connection goes with it.
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => self.connect().await?,
        };
        self.write_request(&mut stream).await?;

        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = read_response(&mut stream, &mut buf, head_request, self.max_body).await;
        self.buf = buf;
        let (info, body) = result?;
        if !info.close {
            self.stream = Some(stream);
        }
        Ok((info, body))
    }
}

impl Conn {
    /// Opens a new connection (through the proxy and TLS, as configured).
    async fn connect(&self) -> Result<Stream, Error> {
        let to = self
            .proxy
            .as_ref()
            .map_or(self.authority.as_str(), |p| p.0.as_str());
        let mut s = TcpStream::connect(to).await.map_err(Error::Connect)?;
        let _ = s.set_nodelay(true);
        match &self.tls {
            None => Ok(Stream::Plain(s)),
            Some(tls) => {
                if let Some((_, headers)) = &self.proxy {
                    connect_tunnel(&mut s, &self.authority, headers).await?;
                }
                let connector = TlsConnector::from(tls.config.clone());
                let t = connector
                    .connect(tls.server_name.clone(), s)
                    .await
                    .map_err(|e| Error::Tls(std::io::Error::from(e).to_string()))?;
                Ok(Stream::Tls(Box::new(t)))
            }
        }
    }

    /// Writes the request buffer to `stream`.
    async fn write_request(&mut self, stream: &mut Stream) -> Result<(), Error> {
        let mut req = std::mem::take(&mut self.req);
        if self.proxy.is_some() && self.tls.is_none() {
            // Through a proxy, plain HTTP requests name the whole URL.
            absolute_form(&mut req, &self.authority);
        }
        let (res, req) = stream.write_all(req).await;
        self.req = req;
        res.map(|_| ()).map_err(Error::Io)
    }

    /// Sends the request in the request buffer on a new connection and reads the response
    /// head only; the body is then read with [`Self::read_stream`] as it arrives (a long-lived
    /// response such as a Kubernetes watch). Returns the status and the content type. The
    /// connection is not reused afterwards.
    pub async fn open_stream(&mut self) -> Result<(u16, String), Error> {
        self.last = None;
        self.streaming = None;
        self.stream = None;
        let mut stream = self.connect().await?;
        self.write_request(&mut stream).await?;
        let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
        let head = loop {
            let len = buf.len();
            if buf.capacity() - len < 4096 {
                buf.reserve(16 * 1024);
            }
            let cap = buf.capacity();
            let (r, slice) = stream.read(buf.slice_mut(len..cap)).await;
            buf = slice.into_inner();
            if r.map_err(Error::Io)? == 0 {
                return Err(Error::Closed);
            }
            if let Some(head) = parse_head(&buf, false).map_err(Error::Protocol)? {
                break head;
            }
            if buf.len() > 64 * 1024 {
                return Err(Error::Protocol("response head too long".into()));
            }
        };
        if head.gzip {
            return Err(Error::Protocol(
                "a compressed body cannot be read as a stream".into(),
            ));
        }
        let content_type = head
            .content_type
            .and_then(|(s, e)| std::str::from_utf8(&buf[s..e]).ok())
            .unwrap_or("")
            .to_string();
        let pending = buf.split_off(head.head_len);
        self.streaming = Some(BodyStream {
            stream,
            framing: head.framing,
            chunks: ChunkDecoder::default(),
            left: match head.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            pending,
            done: false,
        });
        Ok((head.status, content_type))
    }

    /// Appends the next received part of the streamed body to `out`; false once the body has
    /// ended (nothing more will come). Reads from the network only when nothing is pending.
    pub async fn read_stream(&mut self, out: &mut Vec<u8>) -> Result<bool, Error> {
        let s = self.streaming.as_mut().ok_or(Error::Closed)?;
        loop {
            if s.done {
                return Ok(false);
            }
            if !s.pending.is_empty() {
                let input = std::mem::take(&mut s.pending);
                let before = out.len();
                match s.framing {
                    Framing::Chunked => {
                        s.done = s.chunks.feed(&input, out).map_err(Error::Protocol)?;
                    }
                    Framing::Length(_) => {
                        let n = s.left.min(input.len());
                        out.extend_from_slice(&input[..n]);
                        s.left -= n;
                        s.done = s.left == 0;
                    }
                    Framing::Close => out.extend_from_slice(&input),
                }
                s.pending = input;
                s.pending.clear();
                if out.len() > before || s.done {
                    return Ok(!s.done || out.len() > before);
                }
            }
            if matches!(s.framing, Framing::Length(0)) {
                s.done = true;
                continue;
            }
            let mut buf = std::mem::take(&mut s.pending);
            buf.reserve(READ_CHUNK);
            let len = buf.len();
            let cap = buf.capacity();
            let (r, slice) = s.stream.read(buf.slice_mut(len..cap)).await;
            s.pending = slice.into_inner();
            if r.map_err(Error::Io)? == 0 {
                return match s.framing {
                    Framing::Close => {
                        s.done = true;
                        Ok(false)
                    }
                    _ => Err(Error::Closed),
                };
            }
        }
    }
}

/// Rewrites `GET /path HTTP/1.1` as `GET http://authority/path HTTP/1.1` (once).
fn absolute_form(req: &mut Vec<u8>, authority: &str) {
    let Some(sp) = req.iter().position(|b| *b == b' ') else {
        return;
    };
    if req.get(sp + 1) != Some(&b'/') {
        return;
    }
    let prefix = format!(" http://{authority}");
    req.splice(sp..sp + 1, prefix.bytes());
}

/// Opens a `CONNECT` tunnel to `authority` through the proxy `s` is connected to.
async fn connect_tunnel(s: &mut TcpStream, authority: &str, headers: &str) -> Result<(), Error> {
    let mut req = Vec::new();
    let agent = format!("User-Agent: spate/{}\r\n", env!("CARGO_PKG_VERSION"));
    let head = super::Head {
        method: "CONNECT",
        host: authority,
        path: authority,
        headers: &agent,
        credentials: true,
        extra: headers,
    };
    super::write_request(&mut req, &head, &[]);
    let (r, _) = s.write_all(req).await;
    r.map_err(Error::Io)?;
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let len = head.len();
        if head.capacity() - len < 512 {
            head.reserve(1024);
        }
        let cap = head.capacity();
        let (r, slice) = s.read(head.slice_mut(len..cap)).await;
        head = slice.into_inner();
        match r.map_err(Error::Io)? {
            0 => return Err(Error::Tls("the proxy closed the CONNECT tunnel".into())),
            _ if head.len() > 16 * 1024 => {
                return Err(Error::Protocol(
                    "the proxy's CONNECT answer is too long".into(),
                ));
            }
            _ => {}
        }
        let mut hdrs = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut hdrs);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let code = resp.code.unwrap_or(0);
                if code != 200 {
                    return Err(Error::Protocol(format!(
                        "proxy answered CONNECT with status {code}"
                    )));
                }
                return Ok(());
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(Error::Protocol(format!("proxy: {e}"))),
        }
    }
}

fn is_reset(e: &Error) -> bool {
    matches!(e, Error::Io(io) if matches!(io.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionAborted))
}

/// Reads one response into `buf`. Returns the head and the body's range in `buf`.
async fn read_response(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    head_request: bool,
    max_body: usize,
) -> Result<(super::HeadInfo, (usize, usize)), Error> {
    let mut head = None;
    let mut chunks = ChunkScanner::default();
    loop {
        if let Some(info) = &head {
            let info: &super::HeadInfo = info;
            let body = &buf[info.head_len..];
            match info.framing {
                Framing::Length(n) if body.len() >= n => {
                    let range = (info.head_len, info.head_len + n);
                    return Ok((head.take().expect("head is set"), range));
                }
                Framing::Chunked => {
                    if let Some(end) = chunks.advance(body).map_err(Error::Protocol)? {
                        let start = info.head_len;
                        let n = dechunk_in_place(&mut buf[start..start + end])
                            .map_err(Error::Protocol)?;
                        return Ok((head.take().expect("head is set"), (start, start + n)));
                    }
                }
                _ => {}
            }
            if body.len() > max_body {
                return Err(Error::BodyTooLarge(max_body));
            }
        }

        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK.max(buf.capacity()));
        }
        let len = buf.len();
        let cap = buf.capacity();
        let owned = std::mem::take(buf);
        let (res, slice) = stream.read(owned.slice_mut(len..cap)).await;
        *buf = slice.into_inner();
        let n = res.map_err(Error::Io)?;
        if n == 0 {
            // EOF: complete only for a close-delimited body.
            return match head.take() {
                Some(info) if info.framing == Framing::Close => {
                    let range = (info.head_len, buf.len());
                    Ok((info, range))
                }
                _ => Err(Error::Closed),
            };
        }
        if head.is_none() {
            head = parse_head(buf, head_request).map_err(Error::Protocol)?;
            if let Some(info) = &head
                && let Framing::Length(n) = info.framing
                && n > max_body
            {
                return Err(Error::BodyTooLarge(max_body));
            }
        }
    }
}
