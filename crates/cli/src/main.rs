//! `harbor-mirror`: the filter's core on the command line.
//!
//! ```text
//! harbor-mirror check CONFIG
//! harbor-mirror explain CONFIG 'GET /v2/library/nginx/manifests/latest?ns=docker.io' [--host H]
//! harbor-mirror import-k3s REGISTRIES_YAML
//! harbor-mirror clients --mirror URL [--mirror URL]... [--only RECIPE]
//! ```
//!
//! CONFIG is the filter's JSON configuration (`-` reads stdin). Exit status: 0 done, 1 the
//! input is wrong (the message says where), 2 the command line is wrong.
#![forbid(unsafe_code)]

mod clients;
mod explain;
mod k3s;
mod yaml;

use std::io::Read;
use std::process::ExitCode;

use harbor_mirror_core::{Config, PluginConfig};

use clients::{Mirror, Recipe};

const USAGE: &str = "usage:
  harbor-mirror check CONFIG
      parse and compile the filter's JSON configuration, with the errors Envoy would log
  harbor-mirror explain CONFIG 'METHOD PATH' [--host HOST]
      what the filter does with one request: registry, rule, the rewritten path or the refusal
  harbor-mirror import-k3s REGISTRIES_YAML
      convert a k3s/RKE2 registries.yaml into a filter configuration (stdout), with notes on
      what cannot be carried over (stderr)
  harbor-mirror clients --mirror URL [--mirror URL]... [--only docker|containerd|containerd-default|containers|k3s]
      client configuration for the mirror (several mirrors are tried in order)
CONFIG or REGISTRIES_YAML may be - for stdin.";

/// A failure and its exit status.
enum Failure {
    Usage(String),
    Input(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("harbor-mirror: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("harbor-mirror: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), Failure> {
    let (command, rest) = args.split_first().ok_or_else(|| Failure::Usage("a command is required".to_owned()))?;
    let options = Options::parse(rest)?;
    match command.as_str() {
        "check" => {
            let [file] = options.positional(1, "check CONFIG")?;
            let scoped = load_config(file)?;
            for (index, config) in scoped.configs.iter().enumerate() {
                println!("{file}: ok{}, {}", scoped.selector.describe(index), summary(config));
            }
            Ok(())
        }
        "explain" => {
            let [file, request] = options.positional(2, "explain CONFIG 'METHOD PATH'")?;
            let (method, path) = explain::parse_request_line(request).map_err(Failure::Usage)?;
            let scoped = load_config(file)?;
            print!("{}", explain::explain(&scoped, method, path, options.host.as_deref().unwrap_or("")));
            Ok(())
        }
        "import-k3s" => {
            let [file] = options.positional(1, "import-k3s REGISTRIES_YAML")?;
            let source = String::from_utf8(read(file)?).map_err(|_| Failure::Input(format!("{file}: not UTF-8")))?;
            let import = k3s::import(&source).map_err(|e| Failure::Input(format!("{file}: {e}")))?;
            // What it wrote must be what the filter accepts; a failure here is a bug.
            Config::from_json(import.config_json.as_bytes())
                .map_err(|e| Failure::Input(format!("{file}: the converted configuration is invalid: {e}")))?;
            for note in &import.notes {
                eprintln!("harbor-mirror import-k3s: {note}");
            }
            print!("{}", import.config_json);
            Ok(())
        }
        "clients" => {
            let _: [&str; 0] = options.positional(0, "clients --mirror URL")?;
            if options.mirrors.is_empty() {
                return Err(Failure::Usage("clients: --mirror URL is required".to_owned()));
            }
            let mirrors =
                options.mirrors.iter().map(|url| Mirror::parse(url)).collect::<Result<Vec<_>, _>>().map_err(Failure::Usage)?;
            match &options.only {
                Some(name) => {
                    let recipe = Recipe::from_name(name).ok_or_else(|| Failure::Usage(format!("--only {name:?}: no such recipe")))?;
                    print!("{}", recipe.render(&mirrors));
                }
                None => print!("{}", clients::all(&mirrors)),
            }
            Ok(())
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    }
}

/// The command line after the command: positional arguments and the options any command takes.
#[derive(Default)]
struct Options<'a> {
    positional: Vec<&'a str>,
    host: Option<String>,
    mirrors: Vec<String>,
    only: Option<String>,
}

impl<'a> Options<'a> {
    fn parse(args: &'a [String]) -> Result<Self, Failure> {
        let mut options = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || {
                inline.clone().or_else(|| args.next().cloned()).ok_or_else(|| Failure::Usage(format!("{name} needs a value")))
            };
            match name {
                "--host" => options.host = Some(value()?),
                "--mirror" => options.mirrors.push(value()?),
                "--only" => options.only = Some(value()?),
                flag if flag.starts_with("--") => return Err(Failure::Usage(format!("unknown option {flag}"))),
                _ => options.positional.push(arg),
            }
        }
        Ok(options)
    }

    /// Exactly `N` positional arguments.
    fn positional<const N: usize>(&self, count: usize, form: &str) -> Result<[&'a str; N], Failure> {
        <[&str; N]>::try_from(self.positional.as_slice())
            .map_err(|_| Failure::Usage(format!("expected {form} ({count} argument(s), got {})", self.positional.len())))
    }
}

fn read(file: &str) -> Result<Vec<u8>, Failure> {
    if file == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(|e| Failure::Input(format!("stdin: {e}")))?;
        return Ok(bytes);
    }
    std::fs::read(file).map_err(|e| Failure::Input(format!("{file}: {e}")))
}

/// The configuration as the filter's `on_configure` reads it (Higress's `_rules_` envelope
/// included), failing with its log line.
fn load_config(file: &str) -> Result<PluginConfig, Failure> {
    PluginConfig::from_json(&read(file)?).map_err(|e| Failure::Input(format!("invalid configuration: {e}")))
}

fn summary(config: &Config) -> String {
    let keys: Vec<&str> = config.registries().iter().map(|r| r.key.as_str()).collect();
    let default = config.default_registry().map_or("none", |r| r.key.as_str());
    let auth = match (&config.auth.managed, config.auth.rewrite_tokens) {
        (Some(managed), _) => format!("managed token auth as {}", managed.username),
        (None, true) => "pass-through token auth".to_owned(),
        (None, false) => "token rewriting off".to_owned(),
    };
    let noun = if keys.len() == 1 { "registry" } else { "registries" };
    format!("{} {noun} ({}), default {default}, {auth}", keys.len(), keys.join(", "))
}
