//! Docker Hub's names: the registry key the configuration and discovery use for it, and the
//! host names that mean it.

/// Docker Hub's registry key, the one registry whose single-segment names get `library/`.
pub const DOCKER_HUB: &str = "docker.io";

/// Host names of Docker Hub's registry, besides [`DOCKER_HUB`], that clients send in `ns` and
/// Harbor's registry endpoints hold in their URL.
pub const DOCKER_HUB_SYNONYMS: [&str; 2] = ["registry-1.docker.io", "index.docker.io"];
