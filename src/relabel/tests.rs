//! Rule tables: Prometheus' published relabel cases (model/relabel/relabel_test.go), each
//! rewritten as YAML rules, plus the edge cases spate adds.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> LabelScratch {
    let mut l = LabelScratch::default();
    for (k, v) in pairs {
        l.push(k.as_bytes(), v.as_bytes());
    }
    l
}

fn sorted(l: &mut LabelScratch) -> Vec<(String, String)> {
    l.sort().expect("unique names");
    (0..l.len())
        .map(|i| {
            (
                String::from_utf8(l.name(i).to_vec()).unwrap(),
                String::from_utf8(l.value(i).to_vec()).unwrap(),
            )
        })
        .collect()
}

fn rules(yaml: &str) -> Rules {
    let specs: Vec<RuleSpec> = serde_saphyr::from_str(yaml).expect("rules parse");
    Rules(
        specs
            .iter()
            .map(|s| Rule::new(s).unwrap_or_else(|e| panic!("{e}: {s:?}")))
            .collect(),
    )
}

/// Runs `yaml` on `input`: `Some(output)` or `None` when dropped.
fn run(input: &[(&str, &str)], yaml: &str) -> Option<Vec<(String, String)>> {
    let r = rules(yaml);
    let mut l = labels(input);
    let mut scratch = r.scratch();
    r.process(&mut l, &mut scratch).then(|| sorted(&mut l))
}

fn want(pairs: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    let mut l = labels(pairs);
    Some(sorted(&mut l))
}

#[test]
fn prometheus_relabel_cases() {
    let abc = [("a", "foo"), ("b", "bar"), ("c", "baz")];
    let ports = [
        ("__tmp_port", "1234"),
        ("__port1", "1234"),
        ("__port2", "5678"),
    ];
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a str,
        Option<Vec<(String, String)>>,
    );
    let cases: Vec<Case> = vec![
        (
            &abc,
            "- {source_labels: [a], regex: f(.*), target_label: d, replacement: 'ch${1}-ch${1}'}",
            want(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]),
        ),
        (
            &abc,
            "- {source_labels: [a, b], regex: 'f(.*);(.*)r', target_label: a, replacement: 'b${1}${2}m'}
- {source_labels: [c, a], regex: '(b).*b(.*)ba(.*)', target_label: d, replacement: '$1$2$2$3'}",
            want(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")]),
        ),
        (
            &[("a", "foo")],
            "- {source_labels: [a], regex: '.*o.*', action: drop}
- {source_labels: [a], regex: 'f(.*)', target_label: d, replacement: ch$1-ch$1}",
            None,
        ),
        (
            &[("a", "foo"), ("b", "bar")],
            "- {source_labels: [a], regex: '.*o.*', action: drop}",
            None,
        ),
        (
            &[("a", "abc")],
            "- {source_labels: [a], regex: '.*(b).*', target_label: d}",
            want(&[("a", "abc"), ("d", "b")]),
        ),
        (
            &[("a", "foo")],
            "- {source_labels: [a], regex: no-match, action: drop}",
            want(&[("a", "foo")]),
        ),
        (
            &[("a", "foo")],
            "- {source_labels: [a], regex: f|o, action: drop}",
            want(&[("a", "foo")]),
        ),
        (
            &[("a", "foo")],
            "- {source_labels: [a], regex: no-match, action: keep}",
            None,
        ),
        (
            &[("a", "foo")],
            "- {source_labels: [a], regex: f.*, action: keep}",
            want(&[("a", "foo")]),
        ),
        // No replacement without a match.
        (
            &[("a", "boo")],
            "- {source_labels: [a], regex: f, target_label: b, replacement: bar}",
            want(&[("a", "boo")]),
        ),
        (
            &abc,
            "- {source_labels: [c], target_label: d, action: hashmod, modulus: 1000}",
            want(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
        ),
        (
            &[("a", "foo\nbar")],
            "- {source_labels: [a], target_label: b, action: hashmod, modulus: 1000}",
            want(&[("a", "foo\nbar"), ("b", "734")]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            "- {regex: '(b.*)', replacement: 'bar_${1}', action: labelmap}",
            want(&[
                ("a", "foo"),
                ("b1", "bar"),
                ("b2", "baz"),
                ("bar_b1", "bar"),
                ("bar_b2", "baz"),
            ]),
        ),
        (
            &[
                ("a", "foo"),
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc"),
            ],
            "- {regex: '__meta_(my.*)', replacement: '${1}', action: labelmap}",
            want(&[
                ("a", "foo"),
                ("__meta_my_bar", "aaa"),
                ("__meta_my_baz", "bbb"),
                ("__meta_other", "ccc"),
                ("my_bar", "aaa"),
                ("my_baz", "bbb"),
            ]),
        ),
        (
            &[("a", "some-name-value")],
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${2}', target_label: '${1}'}",
            want(&[("a", "some-name-value"), ("name", "value")]),
        ),
        // An empty replacement (a missing group) deletes the target, which is absent anyway.
        (
            &[("a", "some-name-value")],
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${3}', target_label: '${1}'}",
            want(&[("a", "some-name-value")]),
        ),
        // Target names that expand to nothing or to an invalid name are skipped.
        (
            &[("a", "some-name-0")],
            "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}
- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}
- {source_labels: [a], regex: 'some-([^-]+)(-[^,]+)', replacement: '${1}', target_label: '${3}'}",
            want(&[("a", "some-name-0")]),
        ),
        (
            &[("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar")],
            "- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)path:(/[^,]+).*', replacement: '${1}', target_label: __metrics_path__}
- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)job:([^,]+).*', replacement: '${1}', target_label: job}
- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)label:([^=]+)=([^,]+).*', replacement: '${2}', target_label: '${1}'}",
            want(&[
                ("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar"),
                ("__metrics_path__", "/secret"),
                ("job", "some-job"),
                ("foo", "bar"),
            ]),
        ),
        // prometheus/prometheus#12283: a label dropped, then set again, then kept on.
        (
            &[
                ("__meta_kubernetes_pod_container_port_name", "foo"),
                ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
            ],
            "- {regex: '^__meta_kubernetes_pod_container_port_name$', action: labeldrop}
- {source_labels: [__meta_kubernetes_pod_annotation_XXX_metrics_port], regex: '(.+)', replacement: metrics, target_label: __meta_kubernetes_pod_container_port_name}
- {source_labels: [__meta_kubernetes_pod_container_port_name], regex: '^metrics$', action: keep}",
            want(&[
                ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
                ("__meta_kubernetes_pod_container_port_name", "metrics"),
            ]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            "- {regex: '(b.*)', action: labelkeep}",
            want(&[("b1", "bar"), ("b2", "baz")]),
        ),
        (
            &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
            "- {regex: '(b.*)', action: labeldrop}",
            want(&[("a", "foo")]),
        ),
        (
            &[("foo", "bAr123Foo")],
            "- {source_labels: [foo], action: uppercase, target_label: foo_uppercase}
- {source_labels: [foo], action: lowercase, target_label: foo_lowercase}",
            want(&[
                ("foo", "bAr123Foo"),
                ("foo_lowercase", "bar123foo"),
                ("foo_uppercase", "BAR123FOO"),
            ]),
        ),
        (
            &ports,
            "- {source_labels: [__tmp_port], action: keepequal, target_label: __port1}",
            want(&ports),
        ),
        (
            &ports,
            "- {source_labels: [__tmp_port], action: dropequal, target_label: __port1}",
            None,
        ),
        (
            &ports,
            "- {source_labels: [__tmp_port], action: dropequal, target_label: __port2}",
            want(&ports),
        ),
        (
            &ports,
            "- {source_labels: [__tmp_port], action: keepequal, target_label: __port2}",
            None,
        ),
    ];
    for (i, (input, yaml, expected)) in cases.into_iter().enumerate() {
        assert_eq!(run(input, yaml), expected, "case {i}: {yaml}");
    }
}

#[test]
fn edge_cases_beyond_the_published_table() {
    // A constant label needs no source: the replace fast path.
    assert_eq!(
        run(&[("a", "1")], "- {target_label: env, replacement: prod}"),
        want(&[("a", "1"), ("env", "prod")])
    );
    // With a non-empty source and the default regex, `prod` is still the replacement.
    assert_eq!(
        run(
            &[("a", "1")],
            "- {source_labels: [a], target_label: env, replacement: prod}"
        ),
        want(&[("a", "1"), ("env", "prod")])
    );
    // Missing source labels count as empty strings, joined with the separator.
    assert_eq!(
        run(
            &[("b", "x")],
            "- {source_labels: [a, b, c], separator: '/', regex: '/x/', action: keep}"
        ),
        want(&[("b", "x")])
    );
    // Setting an empty value deletes.
    assert_eq!(
        run(
            &[("a", "1"), ("b", "2")],
            "- {source_labels: [zzz], target_label: b, regex: '(.*)', replacement: '$1'}"
        ),
        want(&[("a", "1")])
    );
    // Anchoring: a partial match is no match, and `.` matches a newline.
    assert_eq!(
        run(
            &[("a", "xfoo")],
            "- {source_labels: [a], regex: foo, action: drop}"
        ),
        want(&[("a", "xfoo")])
    );
    assert_eq!(
        run(
            &[("a", "x\ny")],
            "- {source_labels: [a], regex: 'x.y', action: drop}"
        ),
        None
    );
    // `$1x` is the group named `1x`: empty, so the label is deleted.
    assert_eq!(
        run(
            &[("a", "v"), ("t", "old")],
            "- {source_labels: [a], target_label: t, replacement: '$1x'}"
        ),
        want(&[("a", "v")])
    );
    // Action names are case-insensitive.
    assert_eq!(
        run(
            &[("a", "v")],
            "- {source_labels: [a], regex: v, action: DROP}"
        ),
        None
    );
    // ASCII classes: a non-ASCII digit does not match `\d`.
    assert_eq!(
        run(
            &[("a", "٣")],
            "- {source_labels: [a], regex: '\\d', action: keep}"
        ),
        None
    );
    // Go's case mapping: `ß` has no single-character upper case and stays.
    assert_eq!(
        run(
            &[("a", "straße")],
            "- {source_labels: [a], target_label: b, action: uppercase}"
        ),
        want(&[("a", "straße"), ("b", "STRAßE")])
    );
    // labelmap sees the labels as they were before the rule, not the ones it sets.
    assert_eq!(
        run(
            &[("a", "1")],
            "- {regex: '(.*)', replacement: 'x_$1', action: labelmap}"
        ),
        want(&[("a", "1"), ("x_a", "1")])
    );
    // The first drop stops the chain.
    assert_eq!(
        run(
            &[("a", "1")],
            "- {source_labels: [a], regex: '1', action: drop}\n- {target_label: b, replacement: x}"
        ),
        None
    );
}

#[test]
fn hashmod_buckets_match_prometheus() {
    // Values computed by Prometheus' own code (md5, last 8 bytes big-endian, modulo).
    for (value, modulus, bucket) in [("baz", 1000, "976"), ("foo\nbar", 1000, "734")] {
        let yaml = format!(
            "- {{source_labels: [a], target_label: b, action: hashmod, modulus: {modulus}}}"
        );
        assert_eq!(
            run(&[("a", value)], &yaml),
            want(&[("a", value), ("b", bucket)]),
            "{value:?}"
        );
    }
}

/// The error a rule gets under legacy names (`metric_name_validation_scheme: legacy`).
fn invalid(yaml: &str) -> String {
    let specs: Vec<RuleSpec> = serde_saphyr::from_str(yaml).expect("parses");
    Rule::with_names(&specs[0], crate::names::Validation::Legacy).expect_err(yaml)
}

/// Prometheus 3's default, UTF-8 names: any non-empty name is one, a template too.
#[test]
fn utf8_names_take_any_target_label() {
    for yaml in [
        "- {action: lowercase, target_label: '${3}'}",
        "- {source_labels: [a], target_label: '-${3}'}",
        "- {source_labels: [a], target_label: 'service.name'}",
        "- {source_labels: ['k8s.pod'], target_label: 'pod'}",
        "- {action: labelmap, regex: 'x_(.*)', replacement: 'attr.$1'}",
        "- {action: hashmod, source_labels: [a], target_label: 'shard.id', modulus: 4}",
    ] {
        let specs: Vec<RuleSpec> = serde_saphyr::from_str(yaml).expect("parses");
        assert!(Rule::new(&specs[0]).is_ok(), "{yaml}");
        assert!(
            Rule::with_names(&specs[0], crate::names::Validation::Legacy).is_err(),
            "{yaml} under legacy names"
        );
    }
    // A dotted target label is written; under legacy names a template that expands to one
    // is skipped at run time.
    assert_eq!(
        run(
            &[("a", "x")],
            "- {source_labels: [a], target_label: 'service.name'}"
        ),
        want(&[("a", "x"), ("service.name", "x")])
    );
    assert!(invalid("- {action: replace}").contains("requires 'target_label' value"));
}

#[test]
fn validation_messages_match_prometheus() {
    assert!(invalid("- {action: replace}").contains("requires 'target_label' value"));
    assert!(invalid("- {action: lowercase}").contains("requires 'target_label' value"));
    assert!(
        invalid("- {action: lowercase, target_label: '${3}'}")
            .contains("\"${3}\" is invalid 'target_label'")
    );
    assert!(
        invalid("- {source_labels: [a], regex: 'x', target_label: '0${3}'}")
            .contains("\"0${3}\" is invalid 'target_label'")
    );
    assert!(
        invalid("- {source_labels: [a], target_label: '-${3}'}")
            .contains("\"-${3}\" is invalid 'target_label' for replace action")
    );
    assert!(invalid("- {action: hashmod, target_label: x}").contains("non-zero modulus"));
    assert!(invalid("- {action: nope}").contains("unknown relabel action \"nope\""));
    assert!(
        invalid("- {action: labeldrop, regex: x, target_label: y}")
            .contains("requires only 'regex'")
    );
    assert!(
        invalid("- {action: keepequal, target_label: y, regex: x}")
            .contains("requires only 'source_labels' and `target_label`")
    );
    assert!(
        invalid("- {action: uppercase, target_label: y, replacement: z}")
            .contains("'replacement' can not be set")
    );
    assert!(invalid("- {action: labelmap, replacement: '-'}").contains("invalid 'replacement'"));
    assert!(invalid("- {regex: 'a(', target_label: x}").contains("invalid regular expression"));
    let ok = rules(
        "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}",
    );
    assert_eq!(ok.0.len(), 1);
}

#[test]
fn target_label_templates() {
    for (s, valid) in [
        ("-label", false),
        ("label", true),
        ("label${1}", true),
        ("${1}label", true),
        ("${1}", true),
        ("${", false),
        ("$", false),
        ("${}", false),
        ("foo${", false),
        ("$1", true),
        ("asd$2asd", true),
        ("-foo${1}bar-", false),
        ("_${1}_", true),
        ("foo${bar}foo", true),
    ] {
        assert_eq!(valid_template(s), valid, "{s:?}");
    }
}
