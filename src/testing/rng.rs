//! A small deterministic generator, so that a randomised test (kill
//! timings, crash outcomes) replays from its seed.

/// xorshift64*: not for cryptography, only reproducible choices.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose every draw follows from `seed`.
    pub fn new(seed: u64) -> Rng {
        // splitmix64's finaliser, a bijection: every seed starts its own
        // sequence (forcing the low bit on, as this once did, made seeds
        // 2k and 2k+1 replay the same run).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Never zero, or xorshift stays at zero.
        Rng(if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z })
    }

    /// Seeded from the environment variable `var` (see [`seed_from_env`]);
    /// prints `VAR=SEED` so a failing run can be replayed.
    pub fn from_env(var: &str) -> Rng {
        let seed = seed_from_env(var);
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

/// The seed in the environment variable `var`, or one from the clock when
/// it is unset or empty. A value that is set but is not a number panics:
/// a replay that silently ran on a fresh seed would claim to reproduce a
/// run it never did.
pub fn seed_from_env(var: &str) -> u64 {
    let value = std::env::var(var).ok();
    parse_seed(var, value.as_deref()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    })
}

/// [`seed_from_env`], printed on stderr with the command that replays the
/// run (`replay` is that command without the variable), so that a failure
/// seen once can be run again.
pub fn announce_seed(var: &str, replay: &str) -> u64 {
    let seed = seed_from_env(var);
    eprintln!("{var}={seed}; replay: {var}={seed} {replay}");
    seed
}

/// `value` as a seed, `None` when there is none to take.
fn parse_seed(var: &str, value: Option<&str>) -> Option<u64> {
    let value = value.map(str::trim).filter(|v| !v.is_empty())?;
    match value.parse() {
        Ok(seed) => Some(seed),
        Err(e) => panic!("{var}={value:?} is not a seed (a number up to 2^64-1): {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_draws() {
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..8).map(|_| rng.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draws(42), draws(42));
        assert_ne!(draws(42), draws(43));
    }

    #[test]
    fn a_seed_is_read_or_refused() {
        assert_eq!(parse_seed("S", Some("17")), Some(17));
        assert_eq!(parse_seed("S", Some(" 17\n")), Some(17));
        assert_eq!(parse_seed("S", None), None);
        assert_eq!(parse_seed("S", Some("")), None);
        let refused = std::panic::catch_unwind(|| parse_seed("S", Some("0x11")));
        assert!(
            refused.is_err(),
            "an unreadable seed must not fall back to the clock"
        );
    }
}
