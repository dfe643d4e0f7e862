//! Managed mode's token requests to Harbor: the request the filter sends for a project, and
//! what Harbor's answer comes to. A token is used as Harbor gives it; only a JWT as Harbor issues
//! them is read ([`HarborClaims`]), for what it says of the robot and the project.

use crate::harbor::{parse_grant, Grant, HarborClaims, HARBOR_SERVICE, TOKEN_PATH};
use crate::oci::ErrorCode;
use crate::query;
use crate::refusal::Refusal;

/// The `:path` of the managed-mode token request for pulling `repository` (a Harbor name).
/// Harbor grants per project, so the token serves every repository of that project.
pub fn managed_token_path(repository: &str) -> String {
    let mut path = format!("{TOKEN_PATH}?service={HARBOR_SERVICE}&scope=");
    query::push_encoded(&mut path, &format!("repository:{repository}:pull"));
    path
}

/// Why a managed-mode token fetch gave no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    /// What every request waiting for the fetch is answered with.
    pub refusal: Refusal,
    /// Harbor did not accept the robot's credentials. The failure is then remembered for
    /// [`CREDENTIALS_BACKOFF_SECS`], so that a misconfigured mirror does not cost Harbor one
    /// failed login (and its 1.5 s lock) per client request.
    pub credentials: bool,
}

/// How long a refusal of the robot's credentials is remembered per project.
pub const CREDENTIALS_BACKOFF_SECS: u64 = 5;

impl FetchFailure {
    fn unavailable(message: String) -> Self {
        FetchFailure { refusal: Refusal::new(503, ErrorCode::Unavailable, message), credentials: false }
    }

    fn credentials(message: String) -> Self {
        FetchFailure { refusal: Refusal::new(503, ErrorCode::Unavailable, message), credentials: true }
    }
}

/// What a managed-mode token request came to: the grant, or the failure the waiting clients get.
///
/// `status` is `None` when Harbor did not answer (timeout, connection failure). Harbor's answer
/// decides: a token is used as it is unless it is a JWT as Harbor issues them
/// ([`HarborClaims`]), whose claims can say more. Refused robot credentials are this mirror's
/// misconfiguration, so clients get 503 rather than a 401 they could do nothing about: Harbor
/// reports them not with a 401 but with an anonymous token (its `sub` is not the robot). A
/// token without pull on the project is the truth of a 403.
pub fn judge_answer(status: Option<u32>, body: &[u8], project: &str, robot: &str, cluster: &str) -> Result<Grant, FetchFailure> {
    match status {
        // Envoy reports its own timeout of the call as a 504.
        None | Some(504) => Err(FetchFailure::unavailable(format!(
            "harbor's token service did not answer (timeout or connection failure on cluster {cluster:?})"
        ))),
        Some(200) => {
            let grant = parse_grant(body)
                .map_err(|e| FetchFailure::unavailable(format!("harbor's token service answered without a usable token: {e}")))?;
            let Some(claims) = HarborClaims::read(&grant.token) else {
                return Ok(grant);
            };
            if claims.subject != robot {
                let holder = if claims.subject.is_empty() { "an anonymous caller".to_owned() } else { format!("{:?}", claims.subject) };
                return Err(FetchFailure::credentials(format!(
                    "harbor did not accept the robot credentials of auth.robot ({robot}): its token service issued a token for {holder} \
                     (harbor treats wrong credentials as anonymous); check the username and password, and that the robot is enabled and not expired"
                )));
            }
            if !claims.grants_pull(project) {
                return Err(FetchFailure {
                    refusal: Refusal::new(
                        403,
                        ErrorCode::Denied,
                        format!("harbor grants robot {robot} no pull on project {project} (the robot lacks it, or the project does not exist)"),
                    ),
                    credentials: false,
                });
            }
            Ok(grant)
        }
        Some(401) => Err(FetchFailure::credentials(format!("harbor refused the mirror's robot credentials ({robot}); check auth.robot"))),
        Some(403) => Err(FetchFailure {
            refusal: Refusal::new(403, ErrorCode::Denied, format!("harbor's token service denied robot {robot} (403)")),
            credentials: false,
        }),
        // Envoy answers the call itself with 503 when it cannot connect.
        Some(503) => Err(FetchFailure::unavailable(format!("harbor's token service answered 503, or cluster {cluster:?} could not reach it"))),
        Some(status) => Err(FetchFailure::unavailable(format!("harbor's token service answered {status}"))),
    }
}

/// What a client gets when Harbor answered 401 to its request, forwarded with the robot's
/// `token` for `project`: never Harbor's challenge, which an anonymous client cannot answer.
///
/// A token whose claims grant pull on the project was refused by a Harbor that did not issue
/// it, or no longer trusts it: the mirror is misconfigured (its token cluster reaches another
/// Harbor than its route) or Harbor's signing key changed, a 503. A token the mirror cannot
/// read was refused for what it grants: the robot lacks pull on the project, the project does
/// not exist, or Harbor took the robot's credentials for an anonymous caller's, a 403.
pub fn refused_robot_token(token: &str, robot: &str, project: &str) -> Refusal {
    match HarborClaims::read(token) {
        Some(claims) if claims.grants_pull(project) => Refusal::new(
            503,
            ErrorCode::Unavailable,
            format!(
                "harbor refused robot {robot}'s token for project {project} although the token grants pull: auth.cluster may reach \
                 another harbor than this route, or harbor's signing key changed; the token was dropped from the cache"
            ),
        ),
        _ => Refusal::new(
            403,
            ErrorCode::Denied,
            format!(
                "harbor refused robot {robot}'s token for project {project}: the robot lacks pull on it, the project does not exist, \
                 or harbor did not accept auth.robot's credentials; the token was dropped from the cache"
            ),
        ),
    }
}
