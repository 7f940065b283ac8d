//! Relabeling, as Prometheus defines it (`model/relabel`): an ordered list of rules applied to
//! a label set, each of which may rewrite labels or drop the whole set.
//!
//! The same rules run on discovered targets (`relabel_configs`), on scraped samples
//! (`metric_relabel_configs`) and before sending (`write_relabel_configs`). They operate on a
//! [`LabelScratch`], so relabeling a sample borrows the scrape's reused buffers and does not
//! allocate per sample. Regexes follow Go RE2 (see [`regex`]); `hashmod` uses MD5 exactly as
//! Prometheus does, so a fleet sharded by `hashmod` keeps its buckets.

mod md5;
pub mod regex;
#[cfg(test)]
mod tests;

use ::regex::bytes::CaptureLocations;

use crate::names::Validation;

pub use self::regex::GoRegex;
use crate::entry::LabelScratch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Replace,
    Keep,
    Drop,
    KeepEqual,
    DropEqual,
    HashMod,
    LabelMap,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    /// Parses an action name, case-insensitively as Prometheus does.
    pub fn parse(name: &str) -> Option<Action> {
        Some(match name.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

pub const DEFAULT_SEPARATOR: &str = ";";
pub const DEFAULT_REGEX: &str = "(.*)";
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// A relabel rule as written in YAML: `None` where a field is absent.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub source_labels: Option<Vec<String>>,
    pub separator: Option<String>,
    pub regex: Option<String>,
    pub modulus: Option<u64>,
    pub target_label: Option<String>,
    pub replacement: Option<String>,
    pub action: Option<String>,
}

/// One validated rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub action: Action,
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: GoRegex,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    /// `replace` with the default regex and no `$` anywhere: sets a constant when the source
    /// value is empty.
    constant_replace: bool,
    /// The names the rule may write (`metric_name_validation_scheme`).
    names: Validation,
}

/// Matches `target_label` templates under legacy names: letters, digits, `_` and `$name` or
/// `${name}` references, not starting with a digit.
fn valid_template(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    // The first character must be a letter, `_` or a `$` reference.
    let mut i = 0;
    let mut first = true;
    while i < b.len() {
        match b[i] {
            b'$' => {
                if b.get(i + 1) == Some(&b'{') {
                    let start = i + 2;
                    let mut j = start;
                    while j < b.len() && word(b[j]) {
                        j += 1;
                    }
                    if j == start || b.get(j) != Some(&b'}') {
                        return false;
                    }
                    i = j + 1;
                } else {
                    let start = i + 1;
                    let mut j = start;
                    while j < b.len() && word(b[j]) {
                        j += 1;
                    }
                    if j == start {
                        return false;
                    }
                    i = j;
                }
            }
            c if first && (c.is_ascii_alphabetic() || c == b'_') => i += 1,
            c if !first && word(c) => i += 1,
            _ => return false,
        }
        first = false;
    }
    true
}

impl Rule {
    /// Validates a rule with Prometheus' defaults and messages, under Prometheus 3's default
    /// UTF-8 names.
    pub fn new(spec: &RuleSpec) -> Result<Rule, String> {
        Rule::with_names(spec, Validation::Utf8)
    }

    /// Validates a rule with Prometheus' defaults and messages; `names` says which label
    /// names it may write, as Prometheus 3 validates them per `metric_name_validation_scheme`.
    pub fn with_names(spec: &RuleSpec, names: Validation) -> Result<Rule, String> {
        let action_name = spec.action.as_deref().unwrap_or("replace");
        let action = Action::parse(action_name)
            .ok_or_else(|| format!("unknown relabel action {action_name:?}"))?;
        let regex_src = spec.regex.as_deref().unwrap_or(DEFAULT_REGEX);
        let regex = GoRegex::new(regex_src)?;
        let separator = spec
            .separator
            .clone()
            .unwrap_or_else(|| DEFAULT_SEPARATOR.into());
        let replacement = spec
            .replacement
            .clone()
            .unwrap_or_else(|| DEFAULT_REPLACEMENT.into());
        let target_label = spec.target_label.clone().unwrap_or_default();
        let modulus = spec.modulus.unwrap_or(0);
        let name = action.as_str();

        if modulus == 0 && action == Action::HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && target_label.is_empty() {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        let invalid_target =
            || format!("{target_label:?} is invalid 'target_label' for {name} action");
        // Under UTF-8 names any name is one (a `$` reference included); under legacy names a
        // template must expand to one.
        let valid_name = |s: &str| names.is_valid_label_name(s.as_bytes());
        let valid_template = |s: &str| match names {
            Validation::Utf8 => valid_name(s),
            Validation::Legacy => valid_template(s),
        };
        match action {
            Action::Replace if !valid_template(&target_label) => return Err(invalid_target()),
            Action::Lowercase
            | Action::Uppercase
            | Action::KeepEqual
            | Action::DropEqual
            | Action::HashMod
                if !valid_name(&target_label) =>
            {
                return Err(invalid_target());
            }
            _ => {}
        }
        if matches!(
            action,
            Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual
        ) && replacement != DEFAULT_REPLACEMENT
        {
            return Err(format!("'replacement' can not be set for {name} action"));
        }
        if action == Action::LabelMap && !valid_template(&replacement) {
            return Err(format!(
                "{replacement:?} is invalid 'replacement' for {name} action"
            ));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (regex_src != DEFAULT_REGEX
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (spec.source_labels.is_some()
                || !target_label.is_empty()
                || modulus != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        let source_labels = spec.source_labels.clone().unwrap_or_default();
        if let Some(bad) = source_labels.iter().find(|l| !valid_name(l)) {
            return Err(format!(
                "{bad:?} is not a valid label name in 'source_labels'"
            ));
        }
        let constant_replace = action == Action::Replace
            && regex_src == DEFAULT_REGEX
            && !target_label.contains('$')
            && !replacement.contains('$');
        Ok(Rule {
            action,
            source_labels,
            separator,
            regex,
            modulus,
            target_label,
            replacement,
            constant_replace,
            names,
        })
    }
}

/// An ordered list of rules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules(pub Vec<Rule>);

/// Reused buffers for [`Rules::process`]: one per core or per caller.
#[derive(Default)]
pub struct Scratch {
    value: Vec<u8>,
    out: Vec<u8>,
    target: Vec<u8>,
    /// (name, value) pairs collected by `labelmap` before they are set.
    pairs: LabelScratch,
    locations: Vec<CaptureLocations>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Scratch sized for these rules.
    pub fn scratch(&self) -> Scratch {
        Scratch {
            locations: self.0.iter().map(|r| r.regex.locations()).collect(),
            ..Default::default()
        }
    }

    /// Applies every rule in order; false when a rule drops the set (it is then left half
    /// processed). `labels` need not be sorted; labels set by a rule go to the end.
    pub fn process(&self, labels: &mut LabelScratch, scratch: &mut Scratch) -> bool {
        if scratch.locations.len() != self.0.len() {
            *scratch = self.scratch();
        }
        for (rule, locs) in self.0.iter().zip(scratch.locations.iter_mut()) {
            let value = &mut scratch.value;
            value.clear();
            for (i, name) in rule.source_labels.iter().enumerate() {
                if i > 0 {
                    value.extend_from_slice(rule.separator.as_bytes());
                }
                if let Some(v) = labels.get(name.as_bytes()) {
                    value.extend_from_slice(v);
                }
            }
            let value = &scratch.value[..];
            match rule.action {
                Action::Drop => {
                    if rule.regex.is_match(value) {
                        return false;
                    }
                }
                Action::Keep => {
                    if !rule.regex.is_match(value) {
                        return false;
                    }
                }
                Action::DropEqual => {
                    if labels.get(rule.target_label.as_bytes()).unwrap_or_default() == value {
                        return false;
                    }
                }
                Action::KeepEqual => {
                    if labels.get(rule.target_label.as_bytes()).unwrap_or_default() != value {
                        return false;
                    }
                }
                Action::Replace => {
                    if value.is_empty() && rule.constant_replace {
                        labels.set(rule.target_label.as_bytes(), rule.replacement.as_bytes());
                        continue;
                    }
                    if !rule.regex.captures(locs, value) {
                        continue;
                    }
                    let target = &mut scratch.target;
                    target.clear();
                    rule.regex
                        .expand(rule.target_label.as_bytes(), value, locs, target);
                    if !rule.names.is_valid_label_name(target) {
                        continue;
                    }
                    let out = &mut scratch.out;
                    out.clear();
                    rule.regex
                        .expand(rule.replacement.as_bytes(), value, locs, out);
                    // An empty result deletes the label.
                    labels.set(target, out);
                }
                Action::Lowercase | Action::Uppercase => {
                    let out = &mut scratch.out;
                    out.clear();
                    change_case(value, rule.action == Action::Uppercase, out);
                    labels.set(rule.target_label.as_bytes(), out);
                }
                Action::HashMod => {
                    let digest = md5::md5(value);
                    let mut tail = [0u8; 8];
                    tail.copy_from_slice(&digest[8..]);
                    let bucket = u64::from_be_bytes(tail) % rule.modulus;
                    let out = &mut scratch.out;
                    out.clear();
                    out.extend_from_slice(bucket.to_string().as_bytes());
                    labels.set(rule.target_label.as_bytes(), out);
                }
                Action::LabelMap => {
                    // As Prometheus ranges over a snapshot: collect, then set.
                    let pairs = &mut scratch.pairs;
                    pairs.clear();
                    for i in 0..labels.len() {
                        let name = labels.name(i);
                        if rule.regex.captures(locs, name) {
                            let out = &mut scratch.out;
                            out.clear();
                            rule.regex
                                .expand(rule.replacement.as_bytes(), name, locs, out);
                            pairs.push(out, labels.value(i));
                        }
                    }
                    for i in 0..pairs.len() {
                        labels.set(pairs.name(i), pairs.value(i));
                    }
                }
                Action::LabelDrop => labels.retain(|name| !rule.regex.is_match(name)),
                Action::LabelKeep => labels.retain(|name| rule.regex.is_match(name)),
            }
        }
        true
    }
}

/// What one rule made of a label set, for the relabel debugger.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The labels after the rule, sorted by name; empty once a rule dropped the set.
    pub output: Vec<(String, String)>,
    /// False from the rule that dropped the set on.
    pub keep: bool,
}

impl Rules {
    /// Applies the rules to `input` one at a time and reports each one's result, as
    /// Prometheus' `/api/v1/targets/relabel_steps` does: after a drop, every later step shows
    /// `keep: false` and no labels.
    pub fn steps(&self, input: &[(String, String)]) -> Vec<Step> {
        let mut labels = LabelScratch::default();
        for (k, v) in input {
            labels.set(k.as_bytes(), v.as_bytes());
        }
        let mut kept = true;
        let mut out = Vec::with_capacity(self.0.len());
        for rule in &self.0 {
            if kept {
                let one = Rules(vec![rule.clone()]);
                kept = one.process(&mut labels, &mut one.scratch());
            }
            let mut output = Vec::new();
            if kept {
                for i in 0..labels.len() {
                    output.push((
                        String::from_utf8_lossy(labels.name(i)).into_owned(),
                        String::from_utf8_lossy(labels.value(i)).into_owned(),
                    ));
                }
                output.sort();
            }
            out.push(Step { output, keep: kept });
        }
        out
    }
}

/// Go's `strings.ToLower`/`ToUpper`: each character mapped on its own (a character whose
/// mapping is several characters, like `ß`, stays as it is, as in Go).
fn change_case(value: &[u8], upper: bool, out: &mut Vec<u8>) {
    if value.is_ascii() {
        out.extend(value.iter().map(|c| {
            if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        }));
        return;
    }
    let text = String::from_utf8_lossy(value);
    let mut buf = [0u8; 4];
    for ch in text.chars() {
        let mut mapped = [ch; 1];
        let mut n = 0;
        let mut one = |it: &mut dyn Iterator<Item = char>| {
            for c in it {
                if n == 0 {
                    mapped[0] = c;
                }
                n += 1;
            }
        };
        if upper {
            one(&mut ch.to_uppercase());
        } else {
            one(&mut ch.to_lowercase());
        }
        let c = if n == 1 { mapped[0] } else { ch };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Remembers, per position in a target's scrape, what the rules did to the label set found
/// there, so a steady target relabels each series once rather than every scrape (Prometheus
/// caches the same way, by the series' raw text).
///
/// A result is kept as a delta from its input — which input labels went, which labels were
/// set — and deltas are shared: a chain that adds `host=…` to every series of a target keeps
/// one delta for all of them. Label sets over 64 labels are relabeled every time.
#[derive(Default)]
pub struct Memo {
    /// Per position: (fingerprint of the input, outcome).
    slots: Vec<(u64, u32)>,
    /// Deltas, by id: removed-label mask and the labels set.
    deltas: Vec<(u64, LabelScratch)>,
    ids: std::collections::HashMap<u64, u32>,
    /// The input of a miss, to compute its delta.
    input: LabelScratch,
}

const DROPPED: u32 = u32::MAX;
const UNCHANGED: u32 = u32::MAX - 1;

impl Memo {
    /// Applies `rules` to `labels`, the set found at `position` with fingerprint `key` (taken
    /// before `prepare`, which completes the input: the target's labels). False when dropped.
    pub fn process(
        &mut self,
        rules: &Rules,
        position: usize,
        key: u64,
        labels: &mut LabelScratch,
        prepare: impl FnOnce(&mut LabelScratch),
        scratch: &mut Scratch,
    ) -> bool {
        if let Some(&(k, outcome)) = self.slots.get(position)
            && k == key
        {
            match outcome {
                DROPPED => return false,
                UNCHANGED => prepare(labels),
                id => {
                    prepare(labels);
                    let (mask, set) = &self.deltas[id as usize];
                    labels.remove_mask(*mask);
                    for i in 0..set.len() {
                        labels.set(set.name(i), set.value(i));
                    }
                }
            }
            return true;
        }
        prepare(labels);
        if labels.len() > 64 {
            return rules.process(labels, scratch);
        }
        self.input.copy_from(labels);
        let keep = rules.process(labels, scratch);
        let outcome = if keep { self.delta(labels) } else { DROPPED };
        if position >= self.slots.len() {
            // Unfilled positions only come before `position` when an earlier sample was
            // relabeled without the memo (over 64 labels); they miss unless a fingerprint
            // is exactly 0, which a 64-bit hash makes as good as impossible.
            self.slots.resize(position + 1, (0, UNCHANGED));
        }
        self.slots[position] = (key, outcome);
        keep
    }

    /// Drops positions past `len` (the target's scrape got shorter) and, when deltas have
    /// piled up beyond what the positions use, starts over.
    pub fn trim(&mut self, len: usize) {
        self.slots.truncate(len);
        if self.deltas.len() > 2 * self.slots.len() + 64 {
            self.slots.clear();
            self.deltas.clear();
            self.ids.clear();
        }
    }

    /// The delta from `self.input` to `output`, as a shared id.
    fn delta(&mut self, output: &LabelScratch) -> u32 {
        let input = &self.input;
        let mut mask = 0u64;
        let mut kept = 0usize;
        for i in 0..input.len() {
            if output.get(input.name(i)) == Some(input.value(i)) {
                kept += 1;
            } else {
                mask |= 1 << i;
            }
        }
        if mask == 0 && kept == output.len() {
            return UNCHANGED;
        }
        let mut set = LabelScratch::default();
        for i in 0..output.len() {
            if input.get(output.name(i)) != Some(output.value(i)) {
                set.push(output.name(i), output.value(i));
            }
        }
        let fp = set.fingerprint() ^ mask.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if let Some(&id) = self.ids.get(&fp)
            && let Some((m, s)) = self.deltas.get(id as usize)
            && *m == mask
            && s.same_as(&set)
        {
            return id;
        }
        let id = self.deltas.len() as u32;
        self.deltas.push((mask, set));
        self.ids.insert(fp, id);
        id
    }
}
