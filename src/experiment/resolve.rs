//! Experiment files: `extends` chains, `--set path=value` overrides and
//! strict parsing with errors that name the offending field and file.
//!
//! A file is a JSON object. `"extends": "../base.json"` (relative to the
//! file) names a parent whose fields are deep-merged underneath: objects
//! merge key by key, anything else (numbers, strings, arrays) is replaced.
//! Overrides from the command line (`--set train.max_steps=200`) are applied
//! last; the value is parsed as JSON when it is valid JSON, else taken as a
//! string. The merged value is then deserialised into the strict config type
//! (`deny_unknown_fields` everywhere), and an unknown or misspelt field is
//! reported with its dotted path and the file that introduced it.

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// A merged experiment value plus where each top-level path came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub value: Value,
    /// The files of the chain, child first.
    pub files: Vec<PathBuf>,
    /// Per file (same order), its own (un-merged) content.
    layers: Vec<Value>,
    overrides: Vec<(String, Value)>,
}

/// Loads `path` and its `extends` chain, then applies `overrides`.
pub fn load(path: &Path, overrides: &[String]) -> Result<Resolved> {
    let mut files = Vec::new();
    let mut layers = Vec::new();
    let mut next = Some(path.to_path_buf());
    while let Some(p) = next.take() {
        if files.iter().any(|f: &PathBuf| same_file(f, &p)) {
            bail!("{}: `extends` forms a cycle", p.display());
        }
        let text = std::fs::read_to_string(&p).with_context(|| match files.last() {
            Some(child) => format!("{}: cannot read the file it extends, {}", child.display(), p.display()),
            None => format!("cannot read experiment file {}", p.display()),
        })?;
        let mut v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))?;
        let Value::Object(obj) = &mut v else {
            bail!("{}: an experiment file must be a JSON object", p.display());
        };
        if let Some(parent) = obj.remove("extends") {
            let Value::String(rel) = parent else {
                bail!("{}: `extends` must be a path string", p.display());
            };
            next = Some(p.parent().unwrap_or(Path::new(".")).join(rel));
        }
        files.push(p);
        layers.push(v);
    }
    let mut value = Value::Object(Map::new());
    for layer in layers.iter().rev() {
        merge(&mut value, layer.clone());
    }
    let mut parsed = Vec::new();
    for o in overrides {
        let (path, raw) =
            o.split_once('=').with_context(|| format!("override '{o}' must look like path.to.field=value"))?;
        let v = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        set_path(&mut value, path, v.clone()).with_context(|| format!("in override '{o}'"))?;
        parsed.push((path.to_string(), v));
    }
    Ok(Resolved { value, files, layers, overrides: parsed })
}

impl Resolved {
    /// Deserialises strictly, naming the field and the file on error.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        match serde_path_to_error::deserialize::<_, T>(&self.value) {
            Ok(v) => Ok(v),
            Err(e) => {
                let path = e.path().to_string();
                let origin = self.origin_of(&path);
                bail!("{origin}: field `{path}`: {}", e.into_inner())
            }
        }
    }

    /// The file (or override) that set a dotted path, or the top file.
    fn origin_of(&self, path: &str) -> String {
        let parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty() && *p != "?").collect();
        for (p, _) in self.overrides.iter().rev() {
            if parts.join(".").starts_with(p.as_str()) {
                return format!("override --set {p}");
            }
        }
        // Deepest prefix found in any layer, child first.
        for depth in (1..=parts.len()).rev() {
            for (file, layer) in self.files.iter().zip(&self.layers) {
                if lookup(layer, &parts[..depth]).is_some() {
                    return file.display().to_string();
                }
            }
        }
        self.files[0].display().to_string()
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn lookup<'a>(v: &'a Value, parts: &[&str]) -> Option<&'a Value> {
    parts.iter().try_fold(v, |v, p| match v {
        Value::Object(m) => m.get(*p),
        Value::Array(a) => p.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Deep merge: objects key by key, everything else replaced.
pub fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Sets a dotted path, creating objects on the way.
pub fn set_path(root: &mut Value, path: &str, v: Value) -> Result<()> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("empty segment in path '{path}'");
    }
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        cur = match cur {
            Value::Object(m) => {
                if last {
                    m.insert(p.to_string(), v);
                    return Ok(());
                }
                m.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()))
            }
            Value::Array(a) => {
                let idx: usize = p.parse().with_context(|| format!("'{p}' is not an array index"))?;
                let len = a.len();
                let slot = a.get_mut(idx).with_context(|| format!("index {idx} out of range (len {len})"))?;
                if last {
                    *slot = v;
                    return Ok(());
                }
                slot
            }
            _ => bail!("'{}' is not an object", parts[..i].join(".")),
        };
    }
    unreachable!()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Train {
        lr: f64,
        steps: u32,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Exp {
        name: String,
        train: Train,
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn extends_merges_and_overrides_apply_last() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.json", r#"{"name":"base","train":{"lr":0.1,"steps":10}}"#);
        let child =
            write(d.path(), "abl/child.json", r#"{"extends":"../base.json","name":"child","train":{"steps":20}}"#);
        let r = load(&child, &[]).unwrap();
        assert_eq!(r.parse::<Exp>().unwrap(), Exp { name: "child".into(), train: Train { lr: 0.1, steps: 20 } });
        let r = load(&child, &["train.lr=0.5".into(), "name=x".into()]).unwrap();
        assert_eq!(r.parse::<Exp>().unwrap().train.lr, 0.5);
        assert_eq!(r.parse::<Exp>().unwrap().name, "x");
    }

    #[test]
    fn misspelt_fields_name_field_and_file() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "base.json", r#"{"name":"base","train":{"lr":0.1,"steps":10}}"#);
        let child = write(d.path(), "child.json", r#"{"extends":"base.json","train":{"stpes":20}}"#);
        let e = load(&child, &[]).unwrap().parse::<Exp>().unwrap_err().to_string();
        assert!(e.contains("child.json") && e.contains("train.stpes") && e.contains("unknown field"), "{e}");
        let e = load(&child.with_file_name("base.json"), &["train.steps=\"many\"".into()])
            .unwrap()
            .parse::<Exp>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--set train.steps"), "{e}");
    }

    #[test]
    fn cycles_and_bad_json_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let a = write(d.path(), "a.json", r#"{"extends":"b.json"}"#);
        write(d.path(), "b.json", r#"{"extends":"a.json"}"#);
        assert!(load(&a, &[]).unwrap_err().to_string().contains("cycle"));
        let bad = write(d.path(), "bad.json", "{not json");
        assert!(format!("{:#}", load(&bad, &[]).unwrap_err()).contains("bad.json is not valid JSON"));
        assert!(load(&a.with_file_name("missing.json"), &[]).unwrap_err().to_string().contains("missing.json"));
        assert!(load(&write(d.path(), "ok.json", "{}"), &["novalue".into()]).is_err());
    }
}
