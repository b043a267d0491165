//! The models of the THUEE system.

pub mod dual_branch_cnn;
