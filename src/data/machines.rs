//! The 16 machine types of DCASE 2024 Task 2 and the report's machine groups.
//!
//! Groups follow the THUEE report §2.1: NF-CDEE trains one model per group and
//! group fusion (§3.3) weights models per group.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Signal-character groups of the THUEE report (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineGroup {
    Stationary,
    NonStationary,
    Periodic,
    AperiodicImpulse,
}

impl MachineGroup {
    pub const ALL: [MachineGroup; 4] =
        [MachineGroup::Stationary, MachineGroup::NonStationary, MachineGroup::Periodic, MachineGroup::AperiodicImpulse];

    pub fn name(self) -> &'static str {
        match self {
            MachineGroup::Stationary => "stationary",
            MachineGroup::NonStationary => "non_stationary",
            MachineGroup::Periodic => "periodic",
            MachineGroup::AperiodicImpulse => "aperiodic_impulse",
        }
    }

    /// Machine types of this group, over both dev and eval sets.
    pub fn machines(self) -> impl Iterator<Item = &'static MachineInfo> {
        MACHINES.iter().filter(move |m| m.group == self)
    }
}

impl fmt::Display for MachineGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which DCASE 2024 set a machine type belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataSet {
    /// Development set (`dev_data`).
    Dev,
    /// Additional-training + evaluation set (`eval_data`).
    Eval,
}

impl DataSet {
    /// Folder name under the data root.
    pub fn dir_name(self) -> &'static str {
        match self {
            DataSet::Dev => "dev_data",
            DataSet::Eval => "eval_data",
        }
    }
}

/// Static facts about one machine type.
#[derive(Debug, Clone, Copy)]
pub struct MachineInfo {
    pub name: &'static str,
    pub set: DataSet,
    pub group: MachineGroup,
    /// Attributes are concealed (`noAttribute`) in the training file names.
    pub concealed_attributes: bool,
}

const fn m(name: &'static str, set: DataSet, group: MachineGroup, concealed: bool) -> MachineInfo {
    MachineInfo { name, set, group, concealed_attributes: concealed }
}

use DataSet::{Dev, Eval};
use MachineGroup::{AperiodicImpulse, NonStationary, Periodic, Stationary};

/// All machine types (dcase2024.md §2.1, §2.6; groups: report §2.1).
pub const MACHINES: [MachineInfo; 16] = [
    m("ToyCar", Dev, Stationary, false),
    m("ToyTrain", Dev, NonStationary, true),
    m("bearing", Dev, Stationary, false),
    m("fan", Dev, Stationary, false),
    m("gearbox", Dev, Periodic, true),
    m("slider", Dev, Periodic, true),
    m("valve", Dev, AperiodicImpulse, false),
    m("3DPrinter", Eval, Stationary, false),
    m("AirCompressor", Eval, Stationary, true),
    m("Scanner", Eval, AperiodicImpulse, false),
    m("ToyCircuit", Eval, NonStationary, false),
    m("HoveringDrone", Eval, NonStationary, true),
    m("HairDryer", Eval, Stationary, false),
    m("ToothBrush", Eval, Stationary, true),
    m("RoboticArm", Eval, Periodic, false),
    m("BrushlessMotor", Eval, Stationary, true),
];

/// Looks a machine type up by its exact (case-sensitive) DCASE name.
pub fn find(name: &str) -> Option<&'static MachineInfo> {
    MACHINES.iter().find(|m| m.name == name)
}

/// Like [`find`], with an error that lists the known names.
pub fn lookup(name: &str) -> anyhow::Result<&'static MachineInfo> {
    find(name).ok_or_else(|| {
        let known: Vec<_> = MACHINES.iter().map(|m| m.name).collect();
        anyhow::anyhow!("unknown machine type '{name}' (known: {})", known.join(", "))
    })
}

/// Machine types of one set, in the official order.
pub fn of_set(set: DataSet) -> Vec<&'static MachineInfo> {
    MACHINES.iter().filter(|m| m.set == set).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_match_the_report() {
        let names = |g: MachineGroup| g.machines().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(Periodic), ["gearbox", "slider", "RoboticArm"]);
        assert_eq!(names(AperiodicImpulse), ["valve", "Scanner"]);
        assert_eq!(names(NonStationary), ["ToyTrain", "ToyCircuit", "HoveringDrone"]);
        assert_eq!(names(Stationary).len(), 8);
        assert_eq!(of_set(Dev).len(), 7);
        assert_eq!(of_set(Eval).len(), 9);
    }

    #[test]
    fn lookup_is_exact_and_helpful() {
        assert_eq!(lookup("3DPrinter").unwrap().set, Eval);
        let e = lookup("toycar").unwrap_err().to_string();
        assert!(e.contains("unknown machine type 'toycar'") && e.contains("ToyCar"));
    }
}
