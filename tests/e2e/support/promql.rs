//! Reading what the observability kit names: a `/metrics` scrape's
//! families and labels, the metric names and label names of PromQL
//! expressions, and the expressions of a Grafana dashboard.

use std::collections::{HashMap, HashSet};

/// What a histogram's samples add to its name.
pub const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// A `/metrics` scrape: each family's type, and the label names each
/// sample name was seen with.
#[derive(Default)]
pub struct Scrape {
    pub types: HashMap<String, String>,
    pub samples: HashMap<String, HashSet<String>>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                scrape.types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).expect("a sample has a value");
                let labels = scrape.samples.entry(line[..end].to_string()).or_default();
                if line[end..].starts_with('{') {
                    labels.extend(label_names(&line[end + 1..]));
                }
            }
        }
        scrape
    }

    /// The family `name` belongs to: itself, or the histogram whose
    /// `_bucket`, `_sum` or `_count` series it is.
    pub fn family<'a>(&self, name: &'a str) -> &'a str {
        HISTOGRAM_SUFFIXES
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|base| self.types.get(*base).is_some_and(|t| t == "histogram"))
            .unwrap_or(name)
    }

    /// The label names of each series `name` reads: its own, and for a
    /// histogram's name those of its `_bucket`, `_sum` and `_count`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a HashSet<String>> + 'a {
        let family = self.family(name);
        self.samples
            .iter()
            .filter(move |(s, _)| *s == name || (name == family && self.family(s) == family))
            .map(|(_, labels)| labels)
    }

    /// Why `name`, as an expression uses it, is not in the scrape; `None`
    /// when it is.
    pub fn missing(&self, name: &str) -> Option<String> {
        if !self.types.contains_key(self.family(name)) {
            return Some(format!("{name}: no such metric family"));
        }
        let none = self.series(name).next().is_none();
        none.then(|| format!("{name}: a family with no series in this scrape"))
    }

    pub fn has_label(&self, name: &str, label: &str) -> bool {
        self.series(name).any(|labels| labels.contains(label))
    }
}

/// The label names of a `{a="x", b=~"y"}` block (after its `{`): in a
/// sample or in a PromQL selector, quoted values skipped with their escapes.
pub fn label_names(block: &str) -> Vec<String> {
    let (mut names, mut current, mut chars) = (Vec::new(), String::new(), block.chars());
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let name = current.trim().trim_end_matches(['=', '~', '!']).trim();
                names.push(name.to_string());
                current.clear();
                while let Some(v) = chars.next() {
                    match v {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '}' => break,
            ',' => current.clear(),
            _ => current.push(c),
        }
    }
    names
}

/// Every `switchyard_*` metric named in `text`, with the label names of the
/// selector right after it (empty when it has none).
pub fn metric_uses(text: &str) -> Vec<(String, Vec<String>)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut uses = Vec::new();
    for (start, _) in text.match_indices("switchyard_") {
        if text[..start].chars().next_back().is_some_and(ident) {
            continue;
        }
        let rest = &text[start..];
        let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
        let labels = match rest[end..].strip_prefix('{') {
            Some(block) => label_names(block),
            None => Vec::new(),
        };
        uses.push((rest[..end].to_string(), labels));
    }
    uses
}

/// Calls `f` with every string in a JSON document and the key it is under
/// (panel, variable and annotation queries, and the text describing them).
pub fn each_string(value: &serde_json::Value, key: &str, f: &mut impl FnMut(&str, &str)) {
    match value {
        serde_json::Value::String(s) => f(key, s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| each_string(v, key, f)),
        serde_json::Value::Object(map) => map.iter().for_each(|(k, v)| each_string(v, k, f)),
        _ => {}
    }
}

/// Every PromQL expression of the dashboard (panels and annotations, and
/// the selector of each variable's `label_values(...)`), with Grafana's
/// variables filled in as "All".
pub fn dashboard_queries(d: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    each_string(d, "", &mut |key, s| match key {
        "expr" => exprs.push(s.to_string()),
        "definition" => {
            let args = s
                .strip_prefix("label_values(")
                .expect("label_values(SELECTOR, LABEL)");
            exprs.push(args.rsplit_once(',').expect("a label").0.to_string());
        }
        _ => {}
    });
    let all = ["$job", "$instance", "$upstream", "$backend"];
    exprs
        .into_iter()
        .map(|e| {
            all.iter()
                .fold(e.replace("$__rate_interval", "5m"), |e, v| {
                    e.replace(v, ".*")
                })
        })
        .collect()
}
