//! Response framing, kept free of I/O so it can be tested byte by byte: the head (status and
//! the few headers the data plane needs) and the body's extent.

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// Read until the server closes the connection.
    Close,
}

/// What the data plane needs from a response head. Ranges index the receive buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadInfo {
    pub status: u16,
    pub head_len: usize,
    pub framing: Framing,
    pub content_type: Option<(usize, usize)>,
    pub gzip: bool,
    pub close: bool,
    pub retry_after: Option<(usize, usize)>,
    pub location: Option<(usize, usize)>,
    /// Remote Write 2.0's `X-Prometheus-Remote-Write-{Samples,Histograms,Exemplars}-Written`.
    pub written: [Option<u64>; 3],
    /// Consul's `X-Consul-Index` (the blocking-query index).
    pub consul_index: Option<u64>,
}

const MAX_HEADERS: usize = 64;

/// Which Remote Write 2.0 written-count header `name` is: 0 samples, 1 histograms,
/// 2 exemplars.
fn written_kind(name: &str) -> Option<usize> {
    const PREFIX: &str = "x-prometheus-remote-write-";
    let rest = name
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &name[PREFIX.len()..])?;
    ["samples-written", "histograms-written", "exemplars-written"]
        .iter()
        .position(|k| rest.eq_ignore_ascii_case(k))
}

/// Parses the response head in `buf`; `Ok(None)` means more bytes are needed.
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<HeadInfo>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed HTTP response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut info = HeadInfo {
        status,
        head_len,
        framing: Framing::Close,
        content_type: None,
        gzip: false,
        close: http10,
        retry_after: None,
        location: None,
        written: [None; 3],
        consul_index: None,
    };
    let base = buf.as_ptr() as usize;
    let range = |v: &[u8]| {
        let start = v.as_ptr() as usize - base;
        (start, start + v.len())
    };
    let mut length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let v = h.value;
        if h.name.eq_ignore_ascii_case("content-length") {
            let s = std::str::from_utf8(v).map_err(|_| "invalid Content-Length".to_string())?;
            let n: usize = s
                .trim()
                .parse()
                .map_err(|_| format!("invalid Content-Length {s:?}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length headers".into());
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            info.content_type = Some(range(v));
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            info.gzip = v.trim_ascii().eq_ignore_ascii_case(b"gzip");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let has = |tok: &[u8]| {
                v.split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(tok))
            };
            if has(b"close") {
                info.close = true;
            } else if has(b"keep-alive") {
                info.close = false;
            }
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            info.retry_after = Some(range(v));
        } else if h.name.eq_ignore_ascii_case("location") {
            info.location = Some(range(v));
        } else if h.name.eq_ignore_ascii_case("x-consul-index") {
            info.consul_index = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        } else if let Some(kind) = written_kind(h.name) {
            info.written[kind] = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.trim().parse().ok());
        }
    }
    info.framing = if head_request || status == 204 || status == 304 || (100..200).contains(&status)
    {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        info.close = true;
        Framing::Close
    };
    Ok(Some(info))
}

/// Scans a chunked body as it arrives; remembers how far it got so each byte is scanned once.
#[derive(Debug, Default)]
pub struct ChunkScanner {
    /// Offset (from the body start) of the next chunk-size line.
    pos: usize,
    /// Set once the last chunk and the trailers were seen: the chunked body's total length.
    end: Option<usize>,
}

impl ChunkScanner {
    /// Advances over `body` (everything received after the head). Returns the encoded length
    /// once the whole chunked body is present.
    pub fn advance(&mut self, body: &[u8]) -> Result<Option<usize>, String> {
        if let Some(end) = self.end {
            return Ok(Some(end));
        }
        loop {
            let rest = &body[self.pos..];
            match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete((hdr, 0))) => {
                    // Last chunk: skip trailer lines up to the empty line.
                    let mut p = self.pos + hdr;
                    loop {
                        let Some(nl) = memchr_nl(&body[p..]) else {
                            return Ok(None);
                        };
                        let line = &body[p..p + nl];
                        p += nl + 1;
                        if line.is_empty() || line == b"\r" {
                            self.end = Some(p);
                            return Ok(Some(p));
                        }
                    }
                }
                Ok(httparse::Status::Complete((hdr, size))) => {
                    let size = usize::try_from(size).map_err(|_| "chunk too large".to_string())?;
                    let next = self.pos + hdr + size + 2;
                    if body.len() < next {
                        return Ok(None);
                    }
                    if &body[next - 2..next] != b"\r\n" {
                        return Err("malformed chunked body: missing CRLF after chunk".into());
                    }
                    self.pos = next;
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err("malformed chunked body: invalid chunk size".into()),
            }
        }
    }
}

/// Decodes a chunked body as it arrives, for a response read as a stream (a Kubernetes
/// watch): each byte is looked at once, and data is handed on as soon as it is received.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    state: ChunkState,
    /// The part of a size or trailer line received so far.
    line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, up to the empty line.
    Trailer,
    Done,
}

/// The longest chunk-size or trailer line taken.
const MAX_CHUNK_LINE: usize = 4096;

impl ChunkDecoder {
    /// Decodes `input`, appending the body's data to `out`. Returns true once the body is
    /// complete (bytes after its end are ignored).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => return Ok(true),
                ChunkState::Data(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailer => {
                    let Some(nl) = memchr_nl(input) else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_CHUNK_LINE {
                            return Err("malformed chunked body: line too long".into());
                        }
                        return Ok(false);
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        ChunkState::Size => {
                            let size = line.split(|b| *b == b';').next().unwrap_or(b"");
                            let size = std::str::from_utf8(size.trim_ascii())
                                .ok()
                                .and_then(|s| usize::from_str_radix(s, 16).ok())
                                .ok_or("malformed chunked body: invalid chunk size")?;
                            if size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(size)
                            }
                        }
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => {
                            return Err("malformed chunked body: missing CRLF after chunk".into());
                        }
                        _ if line.is_empty() => ChunkState::Done,
                        other => other,
                    };
                }
            }
        }
        Ok(self.state == ChunkState::Done)
    }
}

fn memchr_nl(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

/// Removes chunk framing from a complete chunked body in place; returns the decoded length.
pub fn dechunk_in_place(body: &mut [u8]) -> Result<usize, String> {
    let mut read = 0;
    let mut write = 0;
    loop {
        match httparse::parse_chunk_size(&body[read..]) {
            Ok(httparse::Status::Complete((_, 0))) => return Ok(write),
            Ok(httparse::Status::Complete((hdr, size))) => {
                let size = size as usize;
                let start = read + hdr;
                if start + size > body.len() {
                    return Err("truncated chunk".into());
                }
                body.copy_within(start..start + size, write);
                write += size;
                read = start + size + 2;
            }
            _ => return Err("malformed chunked body".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_with_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: 5\r\n\r\nhello";
        let h = parse_head(raw, false).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, Framing::Length(5));
        let (s, e) = h.content_type.unwrap();
        assert_eq!(&raw[s..e], b"text/plain; version=0.0.4");
        assert!(!h.close && !h.gzip);
        assert_eq!(&raw[h.head_len..], b"hello");
    }

    #[test]
    fn head_partial_and_malformed() {
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-", false).unwrap(),
            None
        );
        assert!(parse_head(b"HTTX/1.1 200 OK\r\n\r\n", false).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
    }

    #[test]
    fn head_close_delimited_and_http10() {
        let h = parse_head(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Close);
        assert!(h.close);
        let h = parse_head(
            b"HTTP/1.1 500 x\r\nConnection: close\r\nContent-Length: 0\r\nRetry-After: 7\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.close);
        assert_eq!(h.status, 500);
        assert!(h.retry_after.is_some());
        let h = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
    }

    #[test]
    fn chunked_body_scanned_incrementally_and_decoded() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        // Feed it one byte more at a time: the scanner must only complete at the very end.
        let mut sc = ChunkScanner::default();
        for n in 0..body.len() {
            assert_eq!(
                sc.advance(&body[..n]).unwrap(),
                None,
                "complete too early at {n}"
            );
        }
        assert_eq!(sc.advance(body).unwrap(), Some(body.len()));
        let mut b = body.to_vec();
        let n = dechunk_in_place(&mut b).unwrap();
        assert_eq!(&b[..n], b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn chunked_body_decoded_as_a_stream() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\nextra";
        // Every split into two pieces gives the same data, complete only at the end.
        for cut in 0..body.len() {
            let mut d = ChunkDecoder::default();
            let mut out = Vec::new();
            let first = d.feed(&body[..cut], &mut out).unwrap();
            assert!(
                !first || cut >= body.len() - 5,
                "complete too early at {cut}"
            );
            assert!(
                d.feed(&body[cut..], &mut out).unwrap(),
                "incomplete after {cut}"
            );
            assert_eq!(
                out,
                b"Wiki"
                    .iter()
                    .chain(b"pedia in\r\n\r\nchunks.")
                    .copied()
                    .collect::<Vec<u8>>()
            );
        }
        // Byte by byte, data is handed on as it comes.
        let mut d = ChunkDecoder::default();
        let mut out = Vec::new();
        for b in b"3\r\nab" {
            assert!(!d.feed(&[*b], &mut out).unwrap());
        }
        assert_eq!(out, b"ab");
        assert!(ChunkDecoder::default().feed(b"zz\r\n", &mut out).is_err());
        assert!(
            ChunkDecoder::default()
                .feed(b"1\r\naXY\r\n", &mut out)
                .is_err()
        );
    }

    #[test]
    fn chunked_body_rejects_garbage() {
        let mut sc = ChunkScanner::default();
        assert!(sc.advance(b"zz\r\nabc").is_err());
        let mut sc = ChunkScanner::default();
        assert!(sc.advance(b"3\r\nabcXY0\r\n\r\n").is_err());
    }
}
