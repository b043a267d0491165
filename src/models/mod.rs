//! The models of the THUEE system.

pub mod beats;
pub mod dual_branch_cnn;
