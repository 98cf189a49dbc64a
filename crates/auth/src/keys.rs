//! Verification keys, each bound to exactly one algorithm, and how they are
//! read from PEM text and JSON Web Key Sets.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use rsa::pkcs1::DecodeRsaPublicKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::Value;

use crate::config::PublicKeyAlgorithm;
use crate::secret::HmacSecret;

/// Smallest RSA modulus accepted, in bits.
pub(crate) const MIN_RSA_BITS: usize = 2048;

/// A key and the one algorithm it may verify. A token's `alg` only ever
/// selects keys whose `alg` is equal, which is what rules out algorithm
/// confusion (an HS256 token "signed" with a public key as the secret).
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub key: DecodingKey,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey").field("alg", &self.alg).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl VerifyKey {
    pub fn hmac(secret: &HmacSecret) -> Self {
        Self { alg: Algorithm::HS256, kid: None, key: DecodingKey::from_secret(secret.as_bytes()) }
    }

    /// A key from PEM text (`PUBLIC KEY`, `RSA PUBLIC KEY` or a certificate).
    /// Private keys are refused: configuring one is a mistake that leaks it
    /// into every place the configuration is copied to.
    pub fn from_pem(alg: PublicKeyAlgorithm, pem: &str, kid: Option<String>) -> Result<Self, String> {
        let label = pem_label(pem).ok_or("not PEM text (expected `-----BEGIN PUBLIC KEY-----`)")?;
        if label.contains("PRIVATE") {
            return Err("this is a private key; configure the matching public key".into());
        }
        let bytes = pem.as_bytes();
        let key = match alg {
            PublicKeyAlgorithm::RS256 => DecodingKey::from_rsa_pem(bytes),
            PublicKeyAlgorithm::EdDSA => DecodingKey::from_ed_pem(bytes),
            PublicKeyAlgorithm::ES256 => DecodingKey::from_ec_pem(bytes),
        }
        .map_err(|e| format!("not a {alg:?} public key: {e}"))?;
        let key = Self { alg: alg.jwt(), kid, key };
        key.check_usable()?;
        Ok(key)
    }

    /// A key from one JWK of a key set. Only signature keys of the supported
    /// asymmetric types are taken; symmetric (`oct`) keys never are, since a
    /// key set is public.
    pub fn from_jwk(jwk: &Value) -> Result<Self, String> {
        let obj = jwk.as_object().ok_or("not a JSON object")?;
        let text = |name: &str| -> Result<Option<&str>, String> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(format!("`{name}` is not a string")),
            }
        };
        let required = |name: &str| text(name)?.ok_or_else(|| format!("`{name}` is missing"));
        if let Some(usage) = text("use")?
            && usage != "sig"
        {
            return Err(format!("`use` is `{}`, not `sig`", shown(usage)));
        }
        if let Some(ops) = obj.get("key_ops")
            && !ops.as_array().is_some_and(|ops| ops.iter().any(|op| op == "verify"))
        {
            return Err("`key_ops` does not include `verify`".into());
        }
        let kid = text("kid")?.map(str::to_owned);
        let declared = text("alg")?;
        let (alg, key) = match required("kty")? {
            "RSA" => (Algorithm::RS256, DecodingKey::from_rsa_components(required("n")?, required("e")?)),
            "OKP" => {
                let crv = required("crv")?;
                if crv != "Ed25519" {
                    return Err(format!("OKP curve `{}` is not supported (only Ed25519)", shown(crv)));
                }
                (Algorithm::EdDSA, DecodingKey::from_ed_components(required("x")?))
            }
            "EC" => {
                let crv = required("crv")?;
                if crv != "P-256" {
                    return Err(format!("EC curve `{}` is not supported (only P-256)", shown(crv)));
                }
                (Algorithm::ES256, DecodingKey::from_ec_components(required("x")?, required("y")?))
            }
            "oct" => return Err("symmetric keys are not taken from a key set".into()),
            other => return Err(format!("key type `{}` is not supported", shown(other))),
        };
        if let Some(declared) = declared
            && declared != alg_name(alg)
        {
            return Err(format!("algorithm `{}` is not supported for this key (only {})", shown(declared), alg_name(alg)));
        }
        let key = key.map_err(|e| format!("malformed key parameters: {e}"))?;
        let key = Self { alg, kid, key };
        key.check_usable()?;
        Ok(key)
    }

    /// Parses the key now, so that a bad key fails at load time rather than
    /// looking like a bad signature later.
    fn check_usable(&self) -> Result<(), String> {
        match self.alg {
            Algorithm::RS256 => {
                let public = match self.key.kind() {
                    DecodingKeyKind::SecretOrDer(der) => rsa::RsaPublicKey::from_pkcs1_der(der).map_err(|e| e.to_string()),
                    DecodingKeyKind::RsaModulusExponent { n, e } => {
                        rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(n), rsa::BigUint::from_bytes_be(e)).map_err(|e| e.to_string())
                    }
                }
                .map_err(|e| format!("unusable RSA public key: {e}"))?;
                let bits = public.n().bits();
                if bits < MIN_RSA_BITS {
                    return Err(format!("RSA key of {bits} bits is too small (at least {MIN_RSA_BITS})"));
                }
                Ok(())
            }
            // Building a verifier parses the key; a probe signature that
            // cannot match gives Ok(false), a bad key gives Err.
            alg => jsonwebtoken::crypto::verify("AA", b"probe", &self.key, alg)
                .map(|_| ())
                .map_err(|e| format!("unusable {} public key: {e}", alg_name(alg))),
        }
    }
}

/// The JOSE name of an algorithm.
pub(crate) fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// Keys of one key set document.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub keys: Vec<VerifyKey>,
    /// Keys left out, with why (for the log).
    pub skipped: Vec<String>,
    /// Usable keys left out beyond the bound.
    pub over_limit: usize,
}

/// Parses `{"keys": [...]}`, keeping at most `max` usable keys. Unusable
/// entries are skipped, not fatal: identity providers publish encryption
/// keys and newer key types next to the signing keys.
pub(crate) fn parse_key_set(body: &[u8], max: usize) -> Result<KeySet, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let entries = doc.get("keys").and_then(Value::as_array).ok_or("not a JSON Web Key Set (no `keys` array)")?;
    let mut set = KeySet::default();
    for (i, entry) in entries.iter().enumerate() {
        match VerifyKey::from_jwk(entry) {
            Ok(key) if set.keys.len() < max => set.keys.push(key),
            Ok(_) => set.over_limit += 1,
            Err(why) => set.skipped.push(format!("keys[{i}]: {why}")),
        }
    }
    Ok(set)
}

fn pem_label(pem: &str) -> Option<&str> {
    let start = pem.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = pem[start..].find("-----")?;
    Some(&pem[start..start + len])
}

/// Text from a token or key set, safe to put in an error message or log.
pub(crate) fn shown(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX && s.bytes().all(|b| b.is_ascii_graphic() && b != b'`') { s.to_owned() } else { "(unprintable)".to_owned() }
}
