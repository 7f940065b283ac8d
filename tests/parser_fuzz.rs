//! A bounded, deterministic fuzz of the text parser: random valid payloads must parse to exactly
//! what was rendered; random mutations of them must never panic, and every sample the parser
//! accepts must round-trip (render it canonically, parse again, same sample).

use spate::exposition::{Format, Parser, unescape_label_value};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Owned {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    ts: Option<i64>,
}

fn same(a: &Owned, b: &Owned) -> bool {
    a.name == b.name
        && a.labels == b.labels
        && a.ts == b.ts
        && (a.value == b.value || (a.value.is_nan() && b.value.is_nan()))
}

fn ident(r: &mut Rng, first: &[u8], rest: &[u8]) -> String {
    let mut s = String::new();
    s.push(*r.pick(first) as char);
    for _ in 0..r.below(8) {
        s.push(*r.pick(rest) as char);
    }
    s
}

const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_0123456789";

fn random_sample(r: &mut Rng) -> Owned {
    let name = ident(
        r,
        b"abcdefghijklmnopqrstuvwxyz_:",
        b"abcdefghijklmnopqrstuvwxyz_:0123456789",
    );
    let mut labels: Vec<(String, String)> = Vec::new();
    for _ in 0..r.below(5) {
        let n = ident(r, ALPHA, ALNUM);
        if n == "le" || n == "quantile" || labels.iter().any(|(x, _)| *x == n) {
            continue;
        }
        let pieces = [
            "a", "Z", " ", "\"", "\\", "\n", "é", "日本", "{", "}", ",", "=", "#", "0.5",
        ];
        let v: String = (0..r.below(6)).map(|_| *r.pick(&pieces)).collect();
        labels.push((n, v));
    }
    let value = match r.below(7) {
        0 => r.below(1_000_000) as f64,
        1 => (r.next() as i64 as f64) / 1e6,
        2 => f64::INFINITY,
        3 => f64::NEG_INFINITY,
        4 => f64::NAN,
        5 => f64::from_bits(r.next() & 0x7fef_ffff_ffff_ffff),
        _ => -(r.below(1000) as f64) * 1e-9,
    };
    let ts = (r.below(3) == 0).then(|| (r.next() >> 1) as i64);
    Owned {
        name,
        labels,
        value,
        ts,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:e}")
    }
}

fn render(s: &Owned, out: &mut String) {
    out.push_str(&s.name);
    if !s.labels.is_empty() {
        out.push('{');
        for (i, (n, v)) in s.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("{n}=\"{}\"", escape(v)));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&render_value(s.value));
    if let Some(ts) = s.ts {
        out.push_str(&format!(" {ts}"));
    }
    out.push('\n');
}

fn parse(body: &[u8]) -> Result<Vec<Owned>, String> {
    let mut scratch = Vec::new();
    let mut p = Parser::new(body, Format::PromText, &mut scratch);
    let mut out = Vec::new();
    while let Some(s) = p.next() {
        let s = s.map_err(|e| e.to_string())?;
        let labels = s
            .labels
            .iter()
            .map(|l| {
                let mut v = Vec::new();
                unescape_label_value(l.value(body), &mut v);
                (
                    String::from_utf8_lossy(l.name(body)).into_owned(),
                    String::from_utf8(v).expect("values are UTF-8"),
                )
            })
            .collect();
        out.push(Owned {
            name: String::from_utf8_lossy(s.name).into_owned(),
            labels,
            value: s.value,
            ts: s.timestamp_ms,
        });
    }
    Ok(out)
}

#[test]
fn valid_payloads_parse_to_what_was_rendered() {
    let mut r = Rng(0x5eed_0001);
    for round in 0..2000 {
        let samples: Vec<Owned> = (0..1 + r.below(20))
            .map(|_| random_sample(&mut r))
            .collect();
        let mut text = String::new();
        for s in &samples {
            match r.below(6) {
                0 => text.push_str(&format!("# HELP {} some \\\\ help\n", s.name)),
                1 => text.push_str(&format!(
                    "# TYPE {} {}\n",
                    s.name,
                    r.pick(&["counter", "gauge", "untyped"])
                )),
                2 => text.push_str("# a comment { with \" junk\n\n"),
                _ => {}
            }
            render(s, &mut text);
        }
        let got = parse(text.as_bytes()).unwrap_or_else(|e| panic!("round {round}: {e}\n{text}"));
        assert_eq!(got.len(), samples.len(), "round {round}:\n{text}");
        for (g, w) in got.iter().zip(&samples) {
            assert!(same(g, w), "round {round}: got {g:?}, want {w:?}\n{text}");
        }
    }
}

#[test]
fn mutated_payloads_never_panic_and_accepted_samples_round_trip() {
    let mut r = Rng(0x5eed_0002);
    let mut accepted = 0;
    for _ in 0..5000 {
        let mut text = String::new();
        for _ in 0..1 + r.below(6) {
            render(&random_sample(&mut r), &mut text);
        }
        let mut bytes = text.into_bytes();
        for _ in 0..1 + r.below(4) {
            let at = r.below(bytes.len() as u64 + 1) as usize;
            let junk = *r.pick(b"{}\",=\\ \t\n\r#0123456789eE+-.aZ_:\x00\xff");
            match r.below(3) {
                0 if at < bytes.len() => bytes[at] = junk,
                1 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, junk),
            }
        }
        // Must not panic, whatever the bytes.
        let Ok(samples) = parse(&bytes) else { continue };
        accepted += 1;
        let mut canonical = String::new();
        for s in &samples {
            render(s, &mut canonical);
        }
        let again = parse(canonical.as_bytes())
            .unwrap_or_else(|e| panic!("re-render failed: {e}\n{canonical}"));
        assert_eq!(again.len(), samples.len());
        for (a, b) in again.iter().zip(&samples) {
            assert!(same(a, b), "round trip changed {b:?} into {a:?}");
        }
    }
    assert!(
        accepted > 100,
        "too few mutations accepted ({accepted}) to exercise the round trip"
    );
}

#[test]
fn mutated_protobuf_never_panics() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/exposition/node_exporter.pb"
    ))
    .unwrap();
    let count = |b: &[u8]| -> Result<usize, String> {
        let mut scratch = Vec::new();
        let mut p = Parser::new(b, Format::Protobuf, &mut scratch);
        let mut n = 0;
        while let Some(s) = p.next() {
            let s = s.map_err(|e| e.to_string())?;
            assert!(
                std::str::from_utf8(s.name).is_ok(),
                "accepted names are UTF-8"
            );
            n += 1;
        }
        Ok(n)
    };
    assert_eq!(count(&body), Ok(507), "the capture parses whole");
    let mut r = Rng(0x5eed_0003);
    let mut rejected = 0;
    for _ in 0..3000 {
        let mut b = body.clone();
        for _ in 0..1 + r.below(8) {
            let at = r.below(b.len() as u64) as usize;
            match r.below(3) {
                0 => b[at] = r.next() as u8,
                1 => b.truncate(at.max(1)),
                _ => b[at] ^= 1 << r.below(8),
            }
        }
        if count(&b).is_err() {
            rejected += 1;
        }
    }
    assert!(
        rejected > 100,
        "mutations must be caught, only {rejected} were"
    );
}
