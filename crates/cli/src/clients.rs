//! Client configuration for a mirror: what `harbor-mirror clients` prints, what the README's
//! recipes show and what the end-to-end suite writes for each client it runs.

/// Docker Hub's registry host, the `server` of containerd's `docker.io/hosts.toml`.
const DOCKER_HUB_SERVER: &str = "https://registry-1.docker.io";

/// One client configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    /// dockerd's `/etc/docker/daemon.json`.
    Docker,
    /// containerd's `certs.d/docker.io/hosts.toml`.
    Containerd,
    /// containerd's `certs.d/_default/hosts.toml`: every registry, selected by `ns`.
    ContainerdDefault,
    /// containers/image's `registries.conf` (podman, CRI-O, skopeo, buildah).
    Containers,
    /// k3s and RKE2 `registries.yaml`.
    K3s,
}

impl Recipe {
    pub const ALL: [Recipe; 5] = [Recipe::Docker, Recipe::Containerd, Recipe::ContainerdDefault, Recipe::Containers, Recipe::K3s];

    /// The name `clients --only` takes.
    pub fn name(self) -> &'static str {
        match self {
            Recipe::Docker => "docker",
            Recipe::Containerd => "containerd",
            Recipe::ContainerdDefault => "containerd-default",
            Recipe::Containers => "containers",
            Recipe::K3s => "k3s",
        }
    }

    pub fn from_name(name: &str) -> Option<Recipe> {
        Recipe::ALL.into_iter().find(|recipe| recipe.name() == name)
    }

    /// Who reads the file and where it goes.
    pub fn title(self) -> &'static str {
        match self {
            Recipe::Docker => "docker: /etc/docker/daemon.json (Docker Hub only; docker falls back to Docker Hub)",
            Recipe::Containerd => "containerd, ctr --hosts-dir, CRI: /etc/containerd/certs.d/docker.io/hosts.toml",
            Recipe::ContainerdDefault => {
                "containerd, every registry (selected by ns): /etc/containerd/certs.d/_default/hosts.toml"
            }
            Recipe::Containers => "podman, CRI-O, skopeo, buildah: /etc/containers/registries.conf",
            Recipe::K3s => "k3s, RKE2: /etc/rancher/k3s/registries.yaml",
        }
    }

    /// The file's text for these mirrors, tried in order.
    pub fn render(self, mirrors: &[Mirror]) -> String {
        match self {
            Recipe::Docker => format!("{{\"registry-mirrors\": [{}]}}\n", quoted_urls(mirrors)),
            Recipe::Containerd => format!("server = \"{DOCKER_HUB_SERVER}\"\n\n{}", hosts(mirrors)),
            Recipe::ContainerdDefault => hosts(mirrors),
            Recipe::Containers => {
                let mut out = String::from(
                    "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n",
                );
                for mirror in mirrors {
                    out.push_str(&format!("\n[[registry.mirror]]\nlocation = \"{}\"\n", mirror.location()));
                    if !mirror.tls {
                        out.push_str("insecure = true\n");
                    }
                }
                out
            }
            // `*` (k3s 1.26+): every other registry through the mirror too, which routes it by
            // containerd's `ns`.
            Recipe::K3s => {
                let urls = quoted_urls(mirrors);
                format!("mirrors:\n  docker.io:\n    endpoint: [{urls}]\n  \"*\":\n    endpoint: [{urls}]\n")
            }
        }
    }
}

/// A mirror URL, `http(s)://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    url: String,
    tls: bool,
}

impl Mirror {
    pub fn parse(url: &str) -> Result<Mirror, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(format!("--mirror {url:?}: an http:// or https:// URL is required")),
        };
        let host = rest.split('/').next().unwrap_or_default();
        let bad = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '?' | '#' | '@');
        if host.is_empty() || rest.contains(bad) {
            return Err(format!("--mirror {url:?}: expected http(s)://host[:port][/path]"));
        }
        Ok(Mirror { url: url.trim_end_matches('/').to_owned(), tls })
    }

    /// `host[:port][/path]`: containers/image's mirror `location` has no scheme.
    fn location(&self) -> &str {
        self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest)
    }
}

fn quoted_urls(mirrors: &[Mirror]) -> String {
    mirrors.iter().map(|m| format!("\"{}\"", m.url)).collect::<Vec<_>>().join(", ")
}

fn hosts(mirrors: &[Mirror]) -> String {
    mirrors
        .iter()
        .map(|m| format!("[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n", m.url))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every recipe, each under a comment line with its title.
pub fn all(mirrors: &[Mirror]) -> String {
    Recipe::ALL.iter().map(|recipe| format!("# {}\n{}", recipe.title(), recipe.render(mirrors))).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirrors(urls: &[&str]) -> Vec<Mirror> {
        urls.iter().map(|url| Mirror::parse(url).expect(url)).collect()
    }

    #[test]
    fn each_recipe_lists_the_mirrors_in_order() {
        let two = mirrors(&["https://mirror.example.com", "http://10.0.0.1:5000/"]);
        let cases = [
            (Recipe::Docker, "{\"registry-mirrors\": [\"https://mirror.example.com\", \"http://10.0.0.1:5000\"]}\n"),
            (
                Recipe::Containerd,
                "server = \"https://registry-1.docker.io\"\n\n[host.\"https://mirror.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n[host.\"http://10.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            ),
            (
                Recipe::ContainerdDefault,
                "[host.\"https://mirror.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n[host.\"http://10.0.0.1:5000\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            ),
            (
                Recipe::Containers,
                "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n\n[[registry.mirror]]\nlocation = \"mirror.example.com\"\n\n[[registry.mirror]]\nlocation = \"10.0.0.1:5000\"\ninsecure = true\n",
            ),
            (
                Recipe::K3s,
                "mirrors:\n  docker.io:\n    endpoint: [\"https://mirror.example.com\", \"http://10.0.0.1:5000\"]\n  \"*\":\n    endpoint: [\"https://mirror.example.com\", \"http://10.0.0.1:5000\"]\n",
            ),
        ];
        for (recipe, expected) in cases {
            assert_eq!(recipe.render(&two), expected, "{}", recipe.name());
            assert_eq!(Recipe::from_name(recipe.name()), Some(recipe));
        }
    }

    #[test]
    fn a_mirror_is_an_http_or_https_url() {
        for bad in ["mirror:5000", "ftp://m", "http://", "http://m/a b", "http://user@m", "http://m/\"x"] {
            assert!(Mirror::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Mirror::parse("http://m:5000/quay.io").map(|m| m.location().to_owned()), Ok("m:5000/quay.io".to_owned()));
    }
}
