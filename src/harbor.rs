//! What Harbor names the same on every installation.

/// Harbor's token service path.
pub const TOKEN_PATH: &str = "/service/token";

/// Harbor's token `service` name; its token service refuses any other (400).
pub const HARBOR_SERVICE: &str = "harbor-registry";
