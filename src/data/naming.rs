//! The DCASE 2024 Task 2 file-name grammar (dcase2024.md §2.5, §2.9).
//!
//! ```text
//! section_<SS>_<source|target>_<train|test>_<normal|anomaly>_<NNNN>_<attributes>.wav
//! section_<SS>_<NNNN>.wav                      (anonymised evaluation test clips)
//! ```
//! The attribute string is everything after the index (tokens 6.., joined by
//! `_`), kept verbatim: `car_B1_spd_31V_mic_1`, `weight15_BckgF` (RoboticArm,
//! no separator between key and value), `noAttribute`. Real quirks accepted:
//! indices starting at 0000, and the RoboticArm ground-truth names that lack
//! the `_test_` token (`section_00_source_normal_0035_weight15_BckgF.wav`).

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Recording domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    Source,
    Target,
}

/// Train or test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

/// Ground-truth condition (training clips are always normal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Normal,
    Anomaly,
}

macro_rules! str_enum {
    ($t:ty { $($v:ident = $s:literal),* }) => {
        impl $t {
            pub fn as_str(self) -> &'static str { match self { $(Self::$v => $s),* } }
            fn parse_token(s: &str) -> Option<Self> { match s { $($s => Some(Self::$v),)* _ => None } }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
str_enum!(Domain { Source = "source", Target = "target" });
str_enum!(Split { Train = "train", Test = "test" });
str_enum!(Label { Normal = "normal", Anomaly = "anomaly" });

/// The attribute string of machine types whose attributes are concealed.
pub const NO_ATTRIBUTE: &str = "noAttribute";

/// What a clip's file name says about it. Anonymised evaluation test clips
/// carry only the section and the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipName {
    /// Two-digit section, e.g. `00`.
    pub section: String,
    pub domain: Option<Domain>,
    pub split: Option<Split>,
    pub label: Option<Label>,
    pub index: u32,
    /// Verbatim attribute string (`noAttribute` where concealed).
    pub attributes: Option<String>,
}

impl ClipName {
    /// Parses a file name (with or without folders; the `.wav` extension is
    /// required). Errors say which token is wrong.
    pub fn parse(file_name: &str) -> Result<ClipName> {
        let base = file_name.rsplit(['/', '\\']).next().unwrap_or(file_name);
        let Some(stem) = base.strip_suffix(".wav") else {
            bail!("'{base}' is not a .wav file name");
        };
        let tokens: Vec<&str> = stem.split('_').collect();
        let fail = |why: String| -> Result<ClipName> {
            bail!(
                "'{base}' does not follow the DCASE grammar \
                 section_<SS>_<source|target>_<train|test>_<normal|anomaly>_<NNNN>_<attributes>.wav \
                 or section_<SS>_<NNNN>.wav: {why}"
            )
        };
        if tokens.len() < 3 || tokens[0] != "section" {
            return fail("it must start with 'section_<SS>_'".into());
        }
        let section = tokens[1];
        if section.len() != 2 || !section.bytes().all(|b| b.is_ascii_digit()) {
            return fail(format!("section '{section}' is not two digits"));
        }
        let parse_index = |t: &str| -> Option<u32> {
            (t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().unwrap())
        };
        if tokens.len() == 3 {
            return match parse_index(tokens[2]) {
                Some(index) => Ok(ClipName {
                    section: section.into(),
                    domain: None,
                    split: None,
                    label: None,
                    index,
                    attributes: None,
                }),
                None => fail(format!("'{}' is not a four-digit index", tokens[2])),
            };
        }
        let Some(domain) = Domain::parse_token(tokens[2]) else {
            return fail(format!("domain '{}' is neither source nor target", tokens[2]));
        };
        // RoboticArm ground-truth names omit the split token; they are test clips.
        let (split, rest) = match Split::parse_token(tokens[3]) {
            Some(s) => (s, &tokens[4..]),
            None if Label::parse_token(tokens[3]).is_some() => (Split::Test, &tokens[3..]),
            None => return fail(format!("split '{}' is neither train nor test", tokens[3])),
        };
        let Some(label) = rest.first().and_then(|t| Label::parse_token(t)) else {
            return fail(format!("label '{}' is neither normal nor anomaly", rest.first().unwrap_or(&"")));
        };
        let Some(index) = rest.get(1).and_then(|t| parse_index(t)) else {
            return fail(format!("'{}' is not a four-digit index", rest.get(1).unwrap_or(&"")));
        };
        if split == Split::Train && label == Label::Anomaly {
            return fail("training clips must be normal".into());
        }
        let attributes = rest[2..].join("_");
        if attributes.is_empty() {
            return fail("the attribute string is missing (use 'noAttribute')".into());
        }
        Ok(ClipName {
            section: section.into(),
            domain: Some(domain),
            split: Some(split),
            label: Some(label),
            index,
            attributes: Some(attributes),
        })
    }

    /// True for anonymised evaluation test names (`section_00_0001.wav`).
    pub fn is_anonymous(&self) -> bool {
        self.domain.is_none()
    }

    /// The canonical file name.
    pub fn file_name(&self) -> String {
        match (self.domain, self.split, self.label, &self.attributes) {
            (Some(d), Some(s), Some(l), Some(a)) => {
                format!("section_{}_{d}_{s}_{l}_{:04}_{a}.wav", self.section, self.index)
            }
            _ => format!("section_{}_{:04}.wav", self.section, self.index),
        }
    }

    /// Key/value pairs of the attribute string where it has the usual
    /// `key_value_key_value` form; `None` for `noAttribute` and for strings
    /// such as RoboticArm's `weight15_BckgF` that pack key and value together.
    pub fn attribute_pairs(&self) -> Option<Vec<(String, String)>> {
        let a = self.attributes.as_deref()?;
        let t: Vec<&str> = a.split('_').collect();
        if a == NO_ATTRIBUTE || !t.len().is_multiple_of(2) {
            return None;
        }
        // Keys are words such as `car`, `spd`, `v1pat`; a token ending in a
        // digit (`weight15`) is a packed key+value, not a key.
        let looks_like_key = |k: &str| {
            k.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && k.chars().last().is_some_and(|c| c.is_ascii_alphabetic())
        };
        let pairs: Vec<_> = t.chunks(2).map(|c| (c[0].to_string(), c[1].to_string())).collect();
        pairs.iter().all(|(k, _)| looks_like_key(k)).then_some(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ClipName {
        ClipName::parse(s).unwrap_or_else(|e| panic!("{s}: {e:#}"))
    }

    #[test]
    fn real_dev_and_eval_names() {
        let c = p("section_00_source_train_normal_0001_car_B1_spd_31V_mic_1.wav");
        assert_eq!(c.domain, Some(Domain::Source));
        assert_eq!(c.split, Some(Split::Train));
        assert_eq!(c.label, Some(Label::Normal));
        assert_eq!(c.index, 1);
        assert_eq!(c.attributes.as_deref(), Some("car_B1_spd_31V_mic_1"));
        assert_eq!(
            c.attribute_pairs().unwrap(),
            vec![("car".into(), "B1".into()), ("spd".into(), "31V".into()), ("mic".into(), "1".into())]
        );
        let t = p("section_00_target_test_anomaly_0050_pro_A_vel_4_loc_E.wav");
        assert_eq!((t.domain, t.split, t.label), (Some(Domain::Target), Some(Split::Test), Some(Label::Anomaly)));
        assert_eq!(p("section_00_target_train_normal_0010_n_X.wav").attributes.as_deref(), Some("n_X"));
        assert_eq!(
            p("section_00_source_test_normal_0001_v1pat_A_v2pat_none.wav").attributes.as_deref(),
            Some("v1pat_A_v2pat_none")
        );
        let g = p("section_00_source_train_normal_0123_noAttribute.wav");
        assert_eq!(g.attributes.as_deref(), Some(NO_ATTRIBUTE));
        assert_eq!(g.attribute_pairs(), None);
        // Round trip of the canonical name.
        let n = "section_00_target_train_normal_0990_weight15_BckgF.wav";
        assert_eq!(p(n).file_name(), n);
    }

    #[test]
    fn quirks() {
        // RoboticArm packs key and value; indices start at 0000.
        let r = p("section_00_source_train_normal_0000_weight15_BckgF.wav");
        assert_eq!(r.index, 0);
        assert_eq!(r.attributes.as_deref(), Some("weight15_BckgF"));
        assert_eq!(r.attribute_pairs(), None);
        // BrushlessMotor test ground-truth names carry attributes; train names do not.
        assert_eq!(
            p("section_00_source_test_anomaly_0049_spd1000_BckgC.wav").attributes.as_deref(),
            Some("spd1000_BckgC")
        );
        assert_eq!(p("section_00_target_train_normal_0999_noAttribute.wav").index, 999);
        // RoboticArm ground-truth list lacks the `_test_` token.
        let q = p("section_00_source_normal_0035_weight15_BckgF.wav");
        assert_eq!((q.split, q.label, q.index), (Some(Split::Test), Some(Label::Normal), 35));
        // Anonymised evaluation names, with folders in front.
        let a = p("eval_data/raw/Scanner/test/section_00_0200.wav");
        assert!(a.is_anonymous());
        assert_eq!(a.index, 200);
        assert_eq!(a.file_name(), "section_00_0200.wav");
        // Multi-token attribute strings of the eval set.
        assert_eq!(p("section_00_target_test_normal_0051_id_C1_spd_1_mic_2.wav").attribute_pairs().unwrap().len(), 3);
        assert_eq!(p("section_00_source_test_normal_0001_mdl_A_spd_1.wav").attributes.as_deref(), Some("mdl_A_spd_1"));
    }

    #[test]
    fn bad_names_say_why() {
        let cases = [
            ("section_00_source_train_normal_0001_a.flac", "not a .wav"),
            ("sec_00_source_train_normal_0001_a.wav", "must start with"),
            ("section_0_source_train_normal_0001_a.wav", "not two digits"),
            ("section_00_middle_train_normal_0001_a.wav", "domain 'middle'"),
            ("section_00_source_valid_normal_0001_a.wav", "split 'valid'"),
            ("section_00_source_test_broken_0001_a.wav", "label 'broken'"),
            ("section_00_source_test_normal_001_a.wav", "four-digit index"),
            ("section_00_source_train_anomaly_0001_a.wav", "must be normal"),
            ("section_00_source_train_normal_0001.wav", "attribute string is missing"),
            ("section_00_12345.wav", "four-digit index"),
        ];
        for (name, why) in cases {
            let e = format!("{:#}", ClipName::parse(name).unwrap_err());
            assert!(e.contains(why), "{name}: {e}");
            assert!(e.contains(name.rsplit('/').next().unwrap()), "{e}");
        }
    }
}
