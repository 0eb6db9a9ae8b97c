//! Anything a tenant can send as a CSR, as PEM text and as the DER inside it: signing must
//! answer with a certificate or an error, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use magnum_certs::{generate_ca, sign_csr, sign_csr_der, CaMaterial};

fn authority() -> &'static CaMaterial {
    static AUTHORITY: OnceLock<CaMaterial> = OnceLock::new();
    AUTHORITY.get_or_init(|| generate_ca("fuzz", 10).expect("a CA can be made"))
}

fuzz_target!(|data: &[u8]| {
    let _ = sign_csr_der(authority(), data, 1);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = sign_csr(authority(), text, 1);
    }
});
