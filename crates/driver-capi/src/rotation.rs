//! CA rotation on a kubeadm cluster, as three rolling replacements of every machine.
//!
//! Kubeadm copies the CA secret (`<cluster>-ca`: `tls.crt`, `tls.key`) onto each machine as
//! it is created: `tls.crt` becomes the trust bundle of the API server, kubelets and joining
//! nodes, and `tls.key` signs the certificates made on the machine; its first certificate must
//! be the one `tls.key` belongs to. A machine never re-reads the secret, so a new CA reaches a
//! cluster only through new machines, and machines of two trust generations run side by side
//! during each roll. The steps keep every pair of them able to talk:
//!
//! 1. bundle `[old, new]`, signed by `old`: every machine learns to trust the new CA while
//!    everything it presents is still signed by the old one;
//! 2. bundle `[new, old]`, signed by `new`: certificates move to the new CA, still trusted by
//!    the machines of step 1;
//! 3. bundle `[new]`: the old CA is no longer trusted, so its client certificates are refused.
//!
//! Each step replaces every machine (`rollout.after` on the control plane and every
//! MachineDeployment) and the next starts only when no machine made before it is left. The
//! live secret alone says which step was applied, so a converge interrupted at any point
//! (magnumd killed, management cluster away) resumes at the right step.

use crate::render::KeyPair;

/// What the live CA secret holds: its certificates (PEM blocks, in order) and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAuthority {
    pub certificates: Vec<String>,
    pub key_pem: String,
}

impl LiveAuthority {
    /// Reads a secret's decoded `tls.crt` and `tls.key`.
    pub fn parse(bundle_pem: &str, key_pem: &str) -> Self {
        Self {
            certificates: split_bundle(bundle_pem),
            key_pem: key_pem.to_owned(),
        }
    }
}

/// The next thing to write to the CA secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// The secret is missing: written with the current CA alone (a new cluster).
    Create(KeyPair),
    /// The secret trusts and signs with the current CA only: nothing to rotate.
    Settled,
    /// A rotation step to apply. `after_previous`: a step was already applied, and its roll
    /// must finish before this one starts.
    Step {
        number: u8,
        pair: KeyPair,
        after_previous: bool,
    },
}

/// The rotation steps in all.
pub const STEPS: u8 = 3;

/// What a rotation step does, in words a tenant reads.
pub fn describe(number: u8) -> &'static str {
    match number {
        1 => "every machine is replaced to trust the new CA beside the old one",
        2 => "every machine is replaced to carry certificates of the new CA",
        _ => "every machine is replaced to trust the new CA alone",
    }
}

/// PEM certificates of a bundle, each trimmed; anything outside them is dropped.
pub fn split_bundle(bundle_pem: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut certificates = Vec::new();
    let mut rest = bundle_pem;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        certificates.push(rest[start..stop].trim().to_owned());
        rest = &rest[stop..];
    }
    certificates
}

fn join_bundle(certificates: &[String]) -> String {
    let mut bundle = certificates.join("\n");
    bundle.push('\n');
    bundle
}

/// Decides the next write from the live secret and the keystore's current CA (`current`);
/// `signs` says whether a key belongs to a certificate.
pub fn next_step(
    live: Option<&LiveAuthority>,
    current: &KeyPair,
    signs: impl Fn(&str, &str) -> bool,
) -> NextStep {
    let new = current.cert_pem.trim().to_owned();
    let Some(live) = live else {
        return NextStep::Create(current.clone());
    };
    let certificates = &live.certificates;
    if certificates.is_empty() {
        // Nothing usable is there: nothing trusts it either.
        return NextStep::Create(current.clone());
    }
    let signer = certificates
        .iter()
        .find(|certificate| signs(certificate, &live.key_pem))
        .unwrap_or(&certificates[0])
        .clone();
    let others: Vec<String> = certificates
        .iter()
        .filter(|certificate| **certificate != new)
        .cloned()
        .collect();
    let holds_new = certificates.contains(&new);
    if signer == new {
        if certificates.len() == 1 {
            return NextStep::Settled;
        }
        // Step 2 was applied: drop the old trust.
        return NextStep::Step {
            number: 3,
            pair: KeyPair {
                cert_pem: join_bundle(std::slice::from_ref(&new)),
                key_pem: current.key_pem.clone(),
            },
            after_previous: true,
        };
    }
    if holds_new {
        // Step 1 was applied: sign with the new CA, still trusting what was trusted.
        let mut bundle = vec![new];
        bundle.extend(others);
        return NextStep::Step {
            number: 2,
            pair: KeyPair {
                cert_pem: join_bundle(&bundle),
                key_pem: current.key_pem.clone(),
            },
            after_previous: true,
        };
    }
    // The start: trust the new CA beside everything trusted now, still signing as before.
    let mut bundle = vec![signer.clone()];
    bundle.extend(
        others
            .into_iter()
            .filter(|certificate| *certificate != signer),
    );
    bundle.push(new);
    NextStep::Step {
        number: 1,
        pair: KeyPair {
            cert_pem: join_bundle(&bundle),
            key_pem: live.key_pem.clone(),
        },
        after_previous: false,
    }
}

/// The rollout time of a step: two whole seconds on, so that every machine made before the
/// step (creation times have whole seconds, by the API server's clock) is older than it even
/// when that clock is up to a second ahead of magnumd's.
pub fn rollout_time(now: chrono::DateTime<chrono::Utc>) -> String {
    let next = chrono::DateTime::from_timestamp(now.timestamp() + 2, 0).unwrap_or(now);
    next.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(tag: &str) -> String {
        format!("-----BEGIN CERTIFICATE-----\n{tag}\n-----END CERTIFICATE-----")
    }

    fn pair(tag: &str) -> KeyPair {
        KeyPair {
            cert_pem: format!("{}\n", pem(tag)),
            key_pem: format!("key-{tag}"),
        }
    }

    /// A key signs the certificate of the same tag.
    fn signs(certificate: &str, key: &str) -> bool {
        certificate.contains(&format!("\n{}\n", key.trim_start_matches("key-")))
    }

    fn live(certificates: &[&str], key: &str) -> LiveAuthority {
        LiveAuthority::parse(
            &certificates
                .iter()
                .map(|tag| pem(tag))
                .collect::<Vec<_>>()
                .join("\n"),
            &format!("key-{key}"),
        )
    }

    fn step(next: NextStep) -> (u8, Vec<String>, String, bool) {
        match next {
            NextStep::Step {
                number,
                pair,
                after_previous,
            } => (
                number,
                split_bundle(&pair.cert_pem),
                pair.key_pem,
                after_previous,
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_rotation_walks_three_steps_from_the_live_secret_alone() {
        let new = pair("NEW");
        assert_eq!(next_step(None, &new, signs), NextStep::Create(new.clone()));
        assert_eq!(
            next_step(Some(&live(&["NEW"], "NEW")), &new, signs),
            NextStep::Settled
        );
        let first = step(next_step(Some(&live(&["OLD"], "OLD")), &new, signs));
        assert_eq!(
            first,
            (1, vec![pem("OLD"), pem("NEW")], "key-OLD".into(), false)
        );
        let second = step(next_step(Some(&live(&["OLD", "NEW"], "OLD")), &new, signs));
        assert_eq!(
            second,
            (2, vec![pem("NEW"), pem("OLD")], "key-NEW".into(), true)
        );
        let third = step(next_step(Some(&live(&["NEW", "OLD"], "NEW")), &new, signs));
        assert_eq!(third, (3, vec![pem("NEW")], "key-NEW".into(), true));
    }

    #[test]
    fn a_second_rotation_during_a_first_keeps_what_machines_trust() {
        // Step 1 of OLD -> FIRST was applied, then FIRST was rotated away to SECOND.
        let second = pair("SECOND");
        let next = step(next_step(
            Some(&live(&["OLD", "FIRST"], "OLD")),
            &second,
            signs,
        ));
        assert_eq!(
            next,
            (
                1,
                vec![pem("OLD"), pem("FIRST"), pem("SECOND")],
                "key-OLD".into(),
                false
            )
        );
        // Step 2 of OLD -> FIRST was applied (FIRST signs), then SECOND was asked for.
        let next = step(next_step(
            Some(&live(&["FIRST", "OLD"], "FIRST")),
            &second,
            signs,
        ));
        assert_eq!(
            next,
            (
                1,
                vec![pem("FIRST"), pem("OLD"), pem("SECOND")],
                "key-FIRST".into(),
                false
            )
        );
    }

    #[test]
    fn an_unreadable_secret_is_rewritten_and_a_foreign_key_starts_from_the_first_certificate() {
        let new = pair("NEW");
        let empty = LiveAuthority::parse("garbage", "key");
        assert_eq!(
            next_step(Some(&empty), &new, signs),
            NextStep::Create(new.clone())
        );
        let next = step(next_step(Some(&live(&["OLD"], "UNKNOWN")), &new, signs));
        assert_eq!(next.0, 1);
        assert_eq!(next.1, vec![pem("OLD"), pem("NEW")]);
        // The live key is kept: it is what signs on the machines now.
        assert_eq!(next.2, "key-UNKNOWN");
    }

    #[test]
    fn a_rollout_time_is_two_whole_seconds_on() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-26T10:00:00.250Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(rollout_time(now), "2026-11-26T10:00:02Z");
    }

    #[test]
    fn bundles_split_into_trimmed_certificates() {
        let text = format!("junk\n{}\n\n{}\ntrailer", pem("A"), pem("B"));
        assert_eq!(split_bundle(&text), vec![pem("A"), pem("B")]);
        assert!(split_bundle("-----BEGIN CERTIFICATE-----\nno end").is_empty());
    }
}
