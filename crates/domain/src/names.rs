const GREEK_LETTERS: [&str; 24] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi", "chi",
    "psi", "omega",
];

/// Upstream's generated names: `<greek letter>-<1..24>-<suffix>`, e.g. `phi-22-template`.
pub fn generate_name(suffix: &str) -> String {
    let random = uuid::Uuid::new_v4().as_u128();
    let letter = GREEK_LETTERS[(random % 24) as usize];
    let number = ((random >> 8) % 24) + 1;
    format!("{letter}-{number}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_follow_upstream_pattern() {
        for _ in 0..200 {
            let name = generate_name("template");
            let parts: Vec<&str> = name.split('-').collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert!(GREEK_LETTERS.contains(&parts[0]));
            let number: u32 = parts[1].parse().unwrap();
            assert!((1..=24).contains(&number));
            assert_eq!(parts[2], "template");
        }
    }
}
