//! CosineAnnealingWarmupRestarts, the widely used PyTorch scheduler
//! (katsura-jp/pytorch-cosine-annealing-with-warmup v2.0, models.md §4).
//!
//! Stepped once per optimizer step. `lr(k)` is the learning rate used by the
//! (k+1)-th optimizer step: `lr(0) = min_lr` (the scheduler overwrites the
//! optimizer's initial lr), then a linear warmup to `max_lr · gamma^cycle`
//! over `warmup_steps`, a cosine down to `min_lr`, and a restart after each
//! cycle, whose length grows as `int((len − warmup) · cycle_mult) + warmup`.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineWarmupRestarts {
    pub first_cycle_steps: u64,
    #[serde(default = "one")]
    pub cycle_mult: f64,
    pub max_lr: f64,
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    /// Decay of the peak per cycle.
    #[serde(default = "one")]
    pub gamma: f64,
}

fn one() -> f64 {
    1.0
}

impl CosineWarmupRestarts {
    pub fn validate(&self) -> Result<()> {
        if self.first_cycle_steps == 0 || self.warmup_steps >= self.first_cycle_steps {
            bail!(
                "schedule: warmup_steps ({}) must be < first_cycle_steps ({})",
                self.warmup_steps,
                self.first_cycle_steps
            );
        }
        if !(self.min_lr >= 0.0 && self.max_lr >= self.min_lr && self.max_lr.is_finite()) {
            bail!("schedule: need 0 <= min_lr <= max_lr (got {} and {})", self.min_lr, self.max_lr);
        }
        if self.cycle_mult <= 0.0 || self.gamma <= 0.0 {
            bail!("schedule: cycle_mult and gamma must be positive");
        }
        Ok(())
    }

    /// Learning rate after `k` scheduler steps. Replays the reference's
    /// stateful recurrence (cycle lengths are truncated to integers each
    /// restart), so it is exact for any k; cost O(k / cycle length).
    pub fn lr(&self, k: u64) -> f64 {
        if k == 0 {
            return self.min_lr;
        }
        let w = self.warmup_steps as f64;
        let (mut step_in_cycle, mut cycle, mut cur) = (k, 0i32, self.first_cycle_steps);
        while step_in_cycle >= cur {
            step_in_cycle -= cur;
            cycle += 1;
            cur = ((cur as f64 - w) * self.cycle_mult) as u64 + self.warmup_steps;
            if cur == 0 {
                break;
            }
        }
        let max_c = self.max_lr * self.gamma.powi(cycle);
        let s = step_in_cycle as f64;
        if s < w {
            self.min_lr + (max_c - self.min_lr) * s / w
        } else {
            let frac = (s - w) / (cur as f64 - w);
            self.min_lr + (max_c - self.min_lr) * (1.0 + (std::f64::consts::PI * frac).cos()) / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_of_one_cycle() {
        let s = CosineWarmupRestarts {
            first_cycle_steps: 100,
            cycle_mult: 1.0,
            max_lr: 1.0,
            min_lr: 0.0,
            warmup_steps: 10,
            gamma: 1.0,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.5).abs() < 1e-15);
        assert_eq!(s.lr(10), 1.0);
        assert!(s.lr(99) < 1e-3);
        assert_eq!(s.lr(100), 0.0); // restart
        assert!((s.lr(105) - 0.5).abs() < 1e-15);
        assert!(CosineWarmupRestarts { warmup_steps: 100, ..s }.validate().is_err());
    }
}
