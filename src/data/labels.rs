//! Auxiliary-task class labels for the embedding models (ArcFace heads).
//!
//! A class is the machine type plus the attribute string of the training
//! clip (`fan###n_A`), optionally plus the domain. Machine types whose
//! attributes are concealed (`noAttribute`) would otherwise collapse to one
//! class per machine, which gives the classifier nothing to separate inside
//! that machine; for them the domain is always part of the class
//! (`gearbox###noAttribute###target`), so that the ten target clips keep their
//! own class centre, as in Wilkinghoff's label scheme (models.md §1.2).
//! The table is built from training clips only: evaluation test clips carry
//! no attributes.
//!
//! Pseudo-attributes: a table may carry a cluster index for the training
//! clips of concealed machines (`asd pseudo-labels`: k-means on a first
//! model's embeddings, per machine and domain). Such a clip's class is
//! `gearbox###pseudo03###source` instead of the single
//! `gearbox###noAttribute###source`, which gives the auxiliary task
//! something to separate inside the machine.

use super::dataset::Clip;
use super::naming::{Domain, NO_ATTRIBUTE};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Which parts of a clip's identity form its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LabelScheme {
    /// Machine type × attribute string (domain only for `noAttribute` machines).
    #[default]
    MachineAttribute,
    /// Machine type × attribute string × domain, for every machine.
    MachineAttributeDomain,
}

/// The ordered list of classes; a class's index is its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelTable {
    pub scheme: LabelScheme,
    pub classes: Vec<String>,
    /// Pseudo-attribute cluster of concealed-attribute training clips, by
    /// [`pseudo_key`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pseudo: BTreeMap<String, usize>,
}

/// A clip's key in a pseudo-attribute map: `<machine>/<file name>`.
pub fn pseudo_key(clip: &Clip) -> String {
    format!("{}/{}", clip.machine, clip.file_name())
}

/// The class name of a clip under a scheme (and pseudo-attributes); `None`
/// for anonymised clips.
pub fn class_key(clip: &Clip, scheme: LabelScheme, pseudo: &BTreeMap<String, usize>) -> Option<String> {
    let attrs = clip.name.attributes.as_deref()?;
    let domain = clip.name.domain?;
    let d = if domain == Domain::Source { "source" } else { "target" };
    if attrs == NO_ATTRIBUTE
        && let Some(c) = pseudo.get(&pseudo_key(clip))
    {
        return Some(format!("{}###pseudo{c:02}###{d}", clip.machine));
    }
    let with_domain = scheme == LabelScheme::MachineAttributeDomain || attrs == NO_ATTRIBUTE;
    Some(if with_domain { format!("{}###{attrs}###{d}", clip.machine) } else { format!("{}###{attrs}", clip.machine) })
}

impl LabelTable {
    /// Builds the table from (training) clips; classes are sorted by name.
    pub fn build<'a>(
        clips: impl IntoIterator<Item = &'a Clip>,
        scheme: LabelScheme,
        pseudo: BTreeMap<String, usize>,
    ) -> Result<LabelTable> {
        let mut classes: Vec<String> = clips.into_iter().filter_map(|c| class_key(c, scheme, &pseudo)).collect();
        classes.sort();
        classes.dedup();
        if classes.is_empty() {
            bail!("no labelled clips to build a class table from");
        }
        Ok(LabelTable { scheme, classes, pseudo })
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Class index of a clip; an error if the clip's class is unknown.
    pub fn index_of(&self, clip: &Clip) -> Result<usize> {
        let key = class_key(clip, self.scheme, &self.pseudo)
            .with_context(|| format!("{} has no attributes to label it by", clip.path.display()))?;
        self.classes
            .binary_search(&key)
            .map_err(|_| anyhow::anyhow!("{}: class '{key}' is not in the label table", clip.path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        crate::util::atomic::write_json(path, self)
    }

    pub fn load(path: &Path) -> Result<LabelTable> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let t: LabelTable =
            serde_json::from_str(&text).with_context(|| format!("{} is not a valid label table", path.display()))?;
        if t.classes.windows(2).any(|w| w[0] >= w[1]) {
            bail!("{}: classes must be sorted and unique", path.display());
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::machines::DataSet;
    use crate::data::naming::{ClipName, Split};

    fn clip(machine: &str, name: &str) -> Clip {
        Clip {
            path: name.into(),
            machine: machine.into(),
            set: DataSet::Dev,
            split: Split::Train,
            name: ClipName::parse(name).unwrap(),
        }
    }

    #[test]
    fn concealed_machines_are_split_by_domain() {
        let clips = [
            clip("fan", "section_00_source_train_normal_0001_n_A.wav"),
            clip("fan", "section_00_source_train_normal_0002_n_A.wav"),
            clip("fan", "section_00_target_train_normal_0001_n_X.wav"),
            clip("gearbox", "section_00_source_train_normal_0001_noAttribute.wav"),
            clip("gearbox", "section_00_target_train_normal_0001_noAttribute.wav"),
        ];
        let t = LabelTable::build(&clips, LabelScheme::MachineAttribute, BTreeMap::new()).unwrap();
        assert_eq!(
            t.classes,
            ["fan###n_A", "fan###n_X", "gearbox###noAttribute###source", "gearbox###noAttribute###target"]
        );
        assert_eq!(t.index_of(&clips[1]).unwrap(), 0);
        assert_eq!(t.index_of(&clips[4]).unwrap(), 3);
        let td = LabelTable::build(&clips, LabelScheme::MachineAttributeDomain, BTreeMap::new()).unwrap();
        assert_eq!(td.classes[0], "fan###n_A###source");
        let unknown = clip("fan", "section_00_target_train_normal_0003_n_Y.wav");
        assert!(t.index_of(&unknown).unwrap_err().to_string().contains("fan###n_Y"));
        // Pseudo-attributes split a concealed machine's clips; others keep theirs.
        let pseudo: BTreeMap<String, usize> = [(pseudo_key(&clips[3]), 2), (pseudo_key(&clips[4]), 0)].into();
        let tp = LabelTable::build(&clips, LabelScheme::MachineAttribute, pseudo).unwrap();
        assert_eq!(
            tp.classes,
            ["fan###n_A", "fan###n_X", "gearbox###pseudo00###target", "gearbox###pseudo02###source"]
        );
        assert_eq!(tp.index_of(&clips[3]).unwrap(), 3);
        let json = serde_json::to_string(&tp).unwrap();
        assert_eq!(serde_json::from_str::<LabelTable>(&json).unwrap(), tp);
        assert!(!serde_json::to_string(&t).unwrap().contains("pseudo"), "no pseudo field without pseudo-attributes");
    }
}
