//! Small shared helpers: atomic file output, `.npy` files, seeded RNG
//! streams, progress reporting.

pub mod atomic;
pub mod npy;
pub mod progress;
pub mod rng;

pub use progress::Progress;
