//! Small shared helpers: atomic file output, `.npy` files, seeded RNG streams.

pub mod atomic;
pub mod npy;
pub mod rng;
