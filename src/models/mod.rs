//! The models of the THUEE system and the one registry that knows them.
//!
//! A model is one module implementing [`ModelSpec`] on its config, plus one
//! variant of [`ModelConfig`] below and its arm in [`ModelConfig::visit`]
//! and [`ModelConfig::info`]: nothing outside this file matches on the
//! model kind (a test checks it).

pub mod beats;
pub mod beats_eat;
pub mod dual_branch_cnn;
pub mod eat;
pub mod nf_cdee;
pub mod official_ae;
pub mod spec;
pub mod state_dict;

pub use spec::{BatchContext, InitContext, ModelInfo, ModelSpec, Scoring, SpecVisitor};

use serde::{Deserialize, Serialize};

/// The model of an experiment (`"model": {"kind": ..., ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelConfig {
    DualBranchCnn(dual_branch_cnn::DualBranchCnnConfig),
    BeatsLora(beats::BeatsLoraConfig),
    NfCdee(nf_cdee::NfCdeeConfig),
    EatLora(eat::EatLoraConfig),
    BeatsEat(beats_eat::BeatsEatConfig),
    OfficialAe(official_ae::OfficialAeConfig),
}

impl ModelConfig {
    /// The kind-independent facts of the model.
    pub fn info(&self) -> &dyn ModelInfo {
        match self {
            ModelConfig::DualBranchCnn(c) => c,
            ModelConfig::BeatsLora(c) => c,
            ModelConfig::NfCdee(c) => c,
            ModelConfig::EatLora(c) => c,
            ModelConfig::BeatsEat(c) => c,
            ModelConfig::OfficialAe(c) => c,
        }
    }

    /// Runs a generic operation on the typed model.
    pub fn visit<V: SpecVisitor>(&self, v: V) -> V::Out {
        match self {
            ModelConfig::DualBranchCnn(c) => v.visit(c),
            ModelConfig::BeatsLora(c) => v.visit(c),
            ModelConfig::NfCdee(c) => v.visit(c),
            ModelConfig::EatLora(c) => v.visit(c),
            ModelConfig::BeatsEat(c) => v.visit(c),
            ModelConfig::OfficialAe(c) => v.visit(c),
        }
    }

    /// The `kind` tag, as written in experiment files.
    pub fn kind(&self) -> String {
        let v = serde_json::to_value(self).expect("model configs serialise");
        v["kind"].as_str().expect("tagged enum").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_serde_tag() {
        let c: ModelConfig = serde_json::from_value(serde_json::json!({"kind": "dual_branch_cnn"})).unwrap();
        assert_eq!(c.kind(), "dual_branch_cnn");
        assert_eq!(c.info().loss_terms(), 3);
    }
}
