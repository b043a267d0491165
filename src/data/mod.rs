//! The DCASE 2024 Task 2 data layer: machine types and groups, the file-name
//! grammar, wav loading, dataset scanning, auxiliary class labels and the
//! synthetic machine-sound generator.

pub mod dataset;
pub mod labels;
pub mod machines;
pub mod naming;
pub mod synth;
pub mod wav;

pub use dataset::{Clip, Dataset, DatasetSplit};
pub use machines::{MachineGroup, MachineInfo};
pub use naming::{ClipName, Domain, Label, Split};
