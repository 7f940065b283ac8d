//! `dns_sd_configs`: targets from DNS records (SRV, A, AAAA, MX, NS), looked up every
//! `refresh_interval` with the nameservers of `/etc/resolv.conf`, as Prometheus does. A
//! lookup that fails keeps the name's last good targets.
//!
//! The resolver is a small stub: one question per query over UDP, TCP when the answer is
//! truncated, nameservers tried in order, the search list for names with fewer dots than
//! `ndots`. `SPATE_RESOLV_CONF` names another resolv.conf, whose `nameserver` lines may carry
//! a port (`127.0.0.1:5353`).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::{Command, Outbox, TargetGroup, sleep_unless};
use crate::config::{DnsSdConfig, DnsType};
use crate::log::Level;

/// Looks the names up until `stop`, sending the groups whenever they change.
pub fn run(
    cfg: &DnsSdConfig,
    job: &str,
    provider: u64,
    tx: &Sender<Command>,
    stop: &AtomicBool,
    stats: &crate::selfmetrics::SdStats,
) {
    let mut last: Vec<Option<TargetGroup>> = vec![None; cfg.names.len()];
    let mut out = Outbox::new(job, provider, tx);
    loop {
        let conf = ResolvConf::load();
        for (i, name) in cfg.names.iter().enumerate() {
            stats
                .dns_lookups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match lookup_group(&conf, name, cfg) {
                Ok(g) => last[i] = Some(g),
                Err(e) => {
                    stats
                        .dns_lookup_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    crate::log!(
                        Level::Error,
                        "discovery",
                        "DNS lookup failed; the name's last targets stay",
                        job = job,
                        name = name,
                        err = e
                    )
                }
            }
        }
        if !out.offer(last.iter().flatten().cloned().collect()) {
            return;
        }
        if sleep_unless(cfg.refresh_interval, stop) {
            return;
        }
    }
}

fn lookup_group(conf: &ResolvConf, name: &str, cfg: &DnsSdConfig) -> Result<TargetGroup, String> {
    let records = conf.lookup(name, cfg.record_type.code())?;
    let mut targets = Vec::new();
    for r in records {
        let mut labels = vec![("__meta_dns_name".to_string(), name.to_string())];
        let address = match (&r, cfg.record_type) {
            (Record::Srv { target, port }, _) => {
                labels.push(("__meta_dns_srv_record_target".into(), target.clone()));
                labels.push(("__meta_dns_srv_record_port".into(), port.to_string()));
                join_host_port(target.trim_end_matches('.'), *port)
            }
            (Record::Addr(ip), _) => join_host_port(&ip.to_string(), cfg.port),
            (Record::Host(host), DnsType::Mx) => {
                labels.push(("__meta_dns_mx_record_target".into(), host.clone()));
                join_host_port(host.trim_end_matches('.'), cfg.port)
            }
            (Record::Host(host), _) => {
                labels.push(("__meta_dns_ns_record_target".into(), host.clone()));
                join_host_port(host.trim_end_matches('.'), cfg.port)
            }
        };
        // Prometheus' empty values for the labels of other record types.
        for l in [
            "__meta_dns_srv_record_target",
            "__meta_dns_srv_record_port",
            "__meta_dns_mx_record_target",
            "__meta_dns_ns_record_target",
        ] {
            if !labels.iter().any(|(n, _)| n == l) {
                labels.push((l.to_string(), String::new()));
            }
        }
        labels.push(("__address__".into(), address));
        labels.sort();
        targets.push(labels);
    }
    Ok(TargetGroup {
        source: name.to_string(),
        targets,
        labels: Vec::new(),
    })
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A record of the kind asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Addr(IpAddr),
    Srv {
        target: String,
        port: u16,
    },
    /// MX exchange or NS host.
    Host(String),
}

/// What resolv.conf says.
pub struct ResolvConf {
    servers: Vec<SocketAddr>,
    search: Vec<String>,
    ndots: usize,
    timeout: Duration,
    attempts: usize,
}

impl ResolvConf {
    pub fn load() -> ResolvConf {
        let path = std::env::var("SPATE_RESOLV_CONF").unwrap_or_else(|_| "/etc/resolv.conf".into());
        Self::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    pub fn parse(text: &str) -> ResolvConf {
        let mut c = ResolvConf {
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        for line in text.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some("nameserver") => {
                    if let Some(s) = f.next() {
                        let addr = s
                            .parse::<SocketAddr>()
                            .ok()
                            .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)));
                        c.servers.extend(addr);
                    }
                }
                Some("search") | Some("domain") => {
                    c.search = f.map(|d| d.trim_end_matches('.').to_string()).collect();
                }
                Some("options") => {
                    for o in f {
                        if let Some(v) = o.strip_prefix("ndots:") {
                            c.ndots = v.parse().unwrap_or(1).min(15);
                        } else if let Some(v) = o.strip_prefix("timeout:") {
                            c.timeout = Duration::from_secs(v.parse().unwrap_or(5).clamp(1, 30));
                        } else if let Some(v) = o.strip_prefix("attempts:") {
                            c.attempts = v.parse().unwrap_or(2).clamp(1, 5);
                        }
                    }
                }
                _ => {}
            }
        }
        if c.servers.is_empty() {
            c.servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
        }
        c
    }

    /// The names to try for `name`, as Go's resolver orders them.
    fn candidates(&self, name: &str) -> Vec<String> {
        if name.ends_with('.') {
            return vec![name.to_string()];
        }
        let rooted = format!("{name}.");
        let mut out = Vec::new();
        let dots = name.matches('.').count();
        if dots >= self.ndots {
            out.push(rooted.clone());
        }
        for d in &self.search {
            out.push(format!("{name}.{d}."));
        }
        if dots < self.ndots {
            out.push(rooted);
        }
        out
    }

    /// The records of type `qtype` for `name`: the first candidate name that has any.
    pub fn lookup(&self, name: &str, qtype: u16) -> Result<Vec<Record>, String> {
        let mut last_err = format!("no records for {name}");
        for candidate in self.candidates(name) {
            match self.query(&candidate, qtype) {
                Ok(r) if !r.is_empty() => return Ok(r),
                Ok(_) => last_err = format!("no records for {name}"),
                Err(e) => last_err = e,
            }
        }
        // Prometheus keeps an empty group when the name has no records.
        if last_err.starts_with("no records") {
            return Ok(Vec::new());
        }
        Err(last_err)
    }

    fn query(&self, name: &str, qtype: u16) -> Result<Vec<Record>, String> {
        let id = (std::process::id() as u16)
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos() as u16);
        let q = build_query(id, name, qtype)?;
        let mut last_err = String::from("no nameserver answered");
        for _ in 0..self.attempts {
            for server in &self.servers {
                match self.exchange_udp(*server, &q, id) {
                    Ok(resp) => match parse_response(&resp, id, qtype) {
                        Ok(Answer::Truncated) => {
                            match self
                                .exchange_tcp(*server, &q)
                                .and_then(|r| match parse_response(&r, id, qtype)? {
                                    Answer::Records(rs) => Ok(rs),
                                    Answer::Truncated => Err("truncated over TCP".into()),
                                }) {
                                Ok(rs) => return Ok(rs),
                                Err(e) => last_err = e,
                            }
                        }
                        Ok(Answer::Records(rs)) => return Ok(rs),
                        Err(e) => last_err = format!("{server}: {e}"),
                    },
                    Err(e) => last_err = format!("{server}: {e}"),
                }
            }
        }
        Err(last_err)
    }

    fn exchange_udp(&self, server: SocketAddr, q: &[u8], id: u16) -> Result<Vec<u8>, String> {
        let bind: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        sock.connect(server).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(self.timeout))
            .map_err(|e| e.to_string())?;
        sock.send(q).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = sock.recv(&mut buf).map_err(|e| e.to_string())?;
            // Ignore stray datagrams for other queries.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                buf.truncate(n);
                return Ok(buf);
            }
        }
    }

    fn exchange_tcp(&self, server: SocketAddr, q: &[u8]) -> Result<Vec<u8>, String> {
        let mut s = TcpStream::connect_timeout(&server, self.timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(self.timeout))
            .map_err(|e| e.to_string())?;
        let mut msg = (q.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(q);
        s.write_all(&msg).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    }
}

fn build_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // recursion desired
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a valid DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    Ok(q)
}

enum Answer {
    Records(Vec<Record>),
    Truncated,
}

/// Reads a (possibly compressed) name at `pos`; returns it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), String> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or("name past the end")? as usize;
        if len == 0 {
            if name.is_empty() {
                name.push('.');
            }
            return Ok((name, end.unwrap_or(pos + 1)));
        }
        if len & 0xc0 == 0xc0 {
            let lo = *msg.get(pos + 1).ok_or("pointer past the end")? as usize;
            end.get_or_insert(pos + 2);
            pos = ((len & 0x3f) << 8) | lo;
            continue;
        }
        let label = msg
            .get(pos + 1..pos + 1 + len)
            .ok_or("label past the end")?;
        name.push_str(&String::from_utf8_lossy(label));
        name.push('.');
        pos += 1 + len;
    }
    Err("name compression loop".into())
}

fn parse_response(msg: &[u8], id: u16, qtype: u16) -> Result<Answer, String> {
    if msg.len() < 12 {
        return Err("short DNS response".into());
    }
    let word = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
    if word(0) != id {
        return Err("response for another query".into());
    }
    let flags = word(2);
    if flags & 0x0200 != 0 {
        return Ok(Answer::Truncated);
    }
    match flags & 0x000f {
        0 => {}
        3 => return Ok(Answer::Records(Vec::new())), // NXDOMAIN: no records
        rcode => return Err(format!("server answered with rcode {rcode}")),
    }
    let (qd, an) = (word(4) as usize, word(6) as usize);
    let mut pos = 12;
    for _ in 0..qd {
        pos = read_name(msg, pos)?.1 + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        let (_, p) = read_name(msg, pos)?;
        let hdr = msg.get(p..p + 10).ok_or("record past the end")?;
        let rtype = u16::from_be_bytes([hdr[0], hdr[1]]);
        let rdlen = u16::from_be_bytes([hdr[8], hdr[9]]) as usize;
        let rdata_at = p + 10;
        let rdata = msg
            .get(rdata_at..rdata_at + rdlen)
            .ok_or("record data past the end")?;
        pos = rdata_at + rdlen;
        if rtype != qtype {
            continue; // CNAMEs on the way
        }
        let rec = match rtype {
            1 if rdlen == 4 => Record::Addr(IpAddr::from([rdata[0], rdata[1], rdata[2], rdata[3]])),
            28 if rdlen == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                Record::Addr(IpAddr::from(b))
            }
            33 if rdlen >= 7 => Record::Srv {
                port: u16::from_be_bytes([rdata[4], rdata[5]]),
                target: read_name(msg, rdata_at + 6)?.0,
            },
            15 if rdlen >= 3 => Record::Host(read_name(msg, rdata_at + 2)?.0),
            2 => Record::Host(read_name(msg, rdata_at)?.0),
            _ => continue,
        };
        out.push(rec);
    }
    Ok(Answer::Records(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_and_search_order() {
        let c = ResolvConf::parse(
            "# comment\nnameserver 10.0.0.1\nnameserver 127.0.0.1:5353\nsearch a.example b.example.\noptions ndots:2 timeout:1\n",
        );
        assert_eq!(
            c.servers,
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
        assert_eq!(c.timeout, Duration::from_secs(1));
        assert_eq!(
            c.candidates("web"),
            ["web.a.example.", "web.b.example.", "web."]
        );
        assert_eq!(
            c.candidates("x.y.z"),
            ["x.y.z.", "x.y.z.a.example.", "x.y.z.b.example."]
        );
        assert_eq!(c.candidates("abs.example."), ["abs.example."]);
    }

    #[test]
    fn parses_answers_with_compressed_names() {
        // A hand-built response to an SRV question for _p._tcp.ex: one SRV record whose
        // target is compressed against the question name.
        let mut m = build_query(7, "_p._tcp.ex", 33).unwrap();
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = 1; // one answer
        m.extend_from_slice(&[0xc0, 12]); // name: pointer to the question
        m.extend_from_slice(&[0, 33, 0, 1, 0, 0, 0, 60]);
        let rdata = [0, 10, 0, 5, 0x23, 0x8c, 2, b'h', b'1', 0xc0, 20];
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&rdata);
        let Answer::Records(r) = parse_response(&m, 7, 33).unwrap() else {
            panic!("not truncated");
        };
        assert_eq!(
            r,
            vec![Record::Srv {
                target: "h1.ex.".into(),
                port: 9100
            }]
        );
        // Garbage never panics.
        for cut in 0..m.len() {
            let _ = parse_response(&m[..cut], 7, 33);
        }
        assert!(parse_response(&m, 8, 33).is_err(), "another query's id");
    }
}
