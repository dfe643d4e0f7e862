//! What every Harbor says the same way: its token service's path and service name, its token
//! answers, and the claims of the JWTs it issues (read only for what they say of the caller and
//! the project; a token is used as Harbor gives it).

use serde::Deserialize;

use crate::oci;

/// Harbor's token service path.
pub const TOKEN_PATH: &str = "/service/token";

/// Harbor's token `service` name; its token service refuses any other (400).
pub const HARBOR_SERVICE: &str = "harbor-registry";

/// Harbor's answer to a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The bearer token.
    pub token: String,
    /// Seconds the token is valid for.
    pub expires_in: u64,
}

/// The validity the token spec assumes when `expires_in` is missing.
const DEFAULT_EXPIRES_IN: u64 = 60;

/// Reads a token response body: `token` (or `access_token`) and `expires_in`.
pub fn parse_grant(body: &[u8]) -> Result<Grant, String> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let wire: Wire = serde_json::from_slice(body).map_err(|e| format!("token response is not the expected JSON: {e}"))?;
    let token = wire.token.filter(|t| !t.is_empty()).or(wire.access_token.filter(|t| !t.is_empty()));
    let token = token.ok_or_else(|| "token response has no token".to_owned())?;
    if token.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("token response holds a token that cannot go in a header".to_owned());
    }
    Ok(Grant { token, expires_in: wire.expires_in.filter(|&s| s > 0).unwrap_or(DEFAULT_EXPIRES_IN) })
}

/// The claims of a token that is a JWT as Harbor issues them: a header with `alg`, and claims
/// with an `access` array (Harbor's `sub` is the robot's name, absent for an anonymous caller).
/// Any other token is opaque to the mirror, and Harbor's answer to it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HarborClaims {
    /// `sub`; empty when absent (Harbor omits it for anonymous callers).
    pub subject: String,
    /// `access`: what the token grants.
    pub access: Vec<Access>,
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `type`: `repository` for the grants that matter here.
    pub kind: String,
    /// `name`: a repository (Harbor grants per project: its first component).
    pub name: String,
    /// `actions`: `pull`, `push`, `delete`...
    pub actions: Vec<String>,
}

impl HarborClaims {
    /// Reads a token's claims; `None` unless it is a JWT as Harbor issues them.
    pub fn read(token: &str) -> Option<HarborClaims> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(_signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        has_alg(&crate::base64::decode(header)?)?;
        read_claims(&crate::base64::decode(claims)?)
    }

    /// Whether the token grants `pull` on `project`.
    pub fn grants_pull(&self, project: &str) -> bool {
        self.access.iter().any(|access| {
            access.kind == "repository"
                && oci::first_component(&access.name).0 == project
                && access.actions.iter().any(|action| action == "pull" || action == "*")
        })
    }
}

/// `Some` if a JWT header is a JSON object with a string `alg`.
fn has_alg(header: &[u8]) -> Option<()> {
    #[derive(Deserialize)]
    struct Header {
        #[allow(dead_code)]
        alg: String,
    }
    serde_json::from_slice::<Header>(header).ok().map(drop)
}

/// A JWT's claims, when they hold an `access` array.
fn read_claims(claims: &[u8]) -> Option<HarborClaims> {
    #[derive(Deserialize)]
    struct Claims {
        access: Vec<WireAccess>,
        #[serde(default)]
        sub: Option<String>,
    }
    #[derive(Deserialize)]
    struct WireAccess {
        #[serde(default, rename = "type")]
        kind: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        actions: Vec<String>,
    }
    let claims: Claims = serde_json::from_slice(claims).ok()?;
    let access = claims.access.into_iter().map(|a| Access { kind: a.kind, name: a.name, actions: a.actions }).collect();
    Some(HarborClaims { subject: claims.sub.unwrap_or_default(), access })
}
