//! A small deterministic generator, so that a randomised test (kill
//! timings, crash outcomes) replays from its seed.

/// xorshift64*: not for cryptography, only reproducible choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose every draw follows from `seed`.
    pub fn new(seed: u64) -> Rng {
        // Never zero, or xorshift stays at zero.
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// Seeded from the environment variable `var` when it holds a number,
    /// else from the clock; prints `VAR=SEED` so a failing run can be
    /// replayed.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{var}={seed}");
        Rng::new(seed)
    }

    fn step(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.step() % n
    }
}
