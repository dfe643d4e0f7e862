//! `harbor-mirror`: the filter's core on the command line.
//!
//! ```text
//! harbor-mirror check FILE
//! harbor-mirror explain FILE 'METHOD PATH' [--host HOST]
//! harbor-mirror discover HARBOR_URL [--robot-file FILE] [--ca-file PEM]
//! harbor-mirror import-k3s REGISTRIES_YAML
//! harbor-mirror clients --mirror URL [--mirror URL]... [--only RECIPE]
//! ```
//!
//! FILE is the filter's JSON configuration, or a file that holds it ([`source`]); `-` reads
//! stdin. Exit status: 0 done, 1 the input is wrong (the message says where), 2 the command
//! line is wrong.

mod clients;
mod discover;
mod explain;
mod k3s;
mod source;
mod yaml;

use std::ffi::OsString;
use std::io::Read;
use std::process::ExitCode;

use harbor_mirror_core::{Config, PluginConfig};
use lexopt::{Arg, Parser, ValueExt};

use clients::{Mirror, Recipe};

const USAGE: &str = "usage: harbor-mirror COMMAND [OPTIONS]

commands:
  check FILE                       the filter's configuration, with the errors Envoy would log
  explain FILE 'METHOD PATH'       what the filter does with one request
  discover HARBOR_URL              the registries harbor's proxy-cache projects serve, as a configuration
  import-k3s REGISTRIES_YAML       a k3s/RKE2 registries.yaml as a filter configuration
  clients --mirror URL             client configuration for the mirror
  help [COMMAND]                   this, or a command's own help

FILE is the filter's JSON configuration, an Envoy bootstrap (YAML or JSON) with the
harbor_mirror wasm filter, an Istio WasmPlugin, an Envoy Gateway EnvoyExtensionPolicy or a
Higress WasmPlugin; - reads stdin. `harbor-mirror COMMAND --help` tells more.";

/// One command's usage line and help.
struct Command {
    name: &'static str,
    usage: &'static str,
    help: &'static str,
}

const COMMANDS: [Command; 5] = [
    Command {
        name: "check",
        usage: "harbor-mirror check FILE",
        help: "Reads the filter's configuration from FILE (found in an Envoy bootstrap or a Kubernetes
resource), parses and compiles it as the filter's on_configure does, and prints a summary of
each configuration, or the error Envoy would log.",
    },
    Command {
        name: "explain",
        usage: "harbor-mirror explain FILE 'METHOD PATH' [--host HOST]",
        help: "What the filter does with one request: the registry it selects and why, the rule, the
rewritten path, or the refusal with its status and OCI error.

  --host HOST    the request's :authority (host routing, Higress's domain rules)",
    },
    Command {
        name: "discover",
        usage: "harbor-mirror discover HARBOR_URL [--robot-file FILE] [--ca-file PEM]",
        help: "Reads harbor's proxy-cache projects and their upstream registries from its API, the way the
filter's discover does (the same code), and prints the configuration the filter would build,
to inspect it or freeze it into a static configuration; what it left out goes to stderr.

  --robot-file FILE   {\"username\": \"robot$...\", \"password\": \"...\"}: list as that robot
                      (anonymous: public projects only)
  --ca-file PEM       the CA that signed harbor's certificate",
    },
    Command {
        name: "import-k3s",
        usage: "harbor-mirror import-k3s REGISTRIES_YAML",
        help: "Converts a k3s/RKE2 registries.yaml (mirrors, rewrite rules) into a filter configuration on
stdout, with a note on stderr for everything that cannot be carried over.",
    },
    Command {
        name: "clients",
        usage: "harbor-mirror clients --mirror URL [--mirror URL]... [--only RECIPE]",
        help: "Client configuration for the mirror: docker's daemon.json, containerd's hosts.toml (docker.io
and _default), containers' registries.conf, k3s's registries.yaml. Several mirrors are
tried in order.

  --mirror URL     the mirror as clients reach it (http:// or https://), repeatable
  --only RECIPE    one of docker, containerd, containerd-default, containers, k3s",
    },
];

/// A failure and its exit status.
enum Failure {
    /// The command line is wrong: the message, and the command whose usage to show.
    Usage(String, Option<&'static Command>),
    /// The input is wrong.
    Input(String),
}

impl From<lexopt::Error> for Failure {
    fn from(error: lexopt::Error) -> Self {
        Failure::Usage(error.to_string(), None)
    }
}

fn main() -> ExitCode {
    match run(Parser::from_env()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("harbor-mirror: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message, command)) => {
            match command {
                Some(command) => eprintln!("harbor-mirror: {message}\nusage: {}", command.usage),
                None => eprintln!("harbor-mirror: {message}\n{USAGE}"),
            }
            ExitCode::from(2)
        }
    }
}

fn run(mut parser: Parser) -> Result<(), Failure> {
    let name = match parser.next()? {
        Some(Arg::Value(name)) => name.string()?,
        Some(Arg::Long("help") | Arg::Short('h')) => {
            println!("{USAGE}");
            return Ok(());
        }
        Some(arg) => return Err(arg.unexpected().into()),
        None => return Err(Failure::Usage("a command is required".to_owned(), None)),
    };
    if name == "help" {
        let topic = parser.next()?.map(|arg| match arg {
            Arg::Value(value) => value.string().map_err(Failure::from),
            arg => Err(arg.unexpected().into()),
        });
        return match topic.transpose()? {
            None => {
                println!("{USAGE}");
                Ok(())
            }
            Some(topic) => {
                let command = find_command(&topic)?;
                println!("usage: {}\n\n{}", command.usage, command.help);
                Ok(())
            }
        };
    }
    let command = find_command(&name)?;
    let options = match Options::parse(command, &mut parser)? {
        Some(options) => options,
        None => {
            println!("usage: {}\n\n{}", command.usage, command.help);
            return Ok(());
        }
    };
    match command.name {
        "check" => check(options.positional::<1>(command)?),
        "explain" => {
            let [file, request] = options.positional::<2>(command)?;
            let (method, path) = explain::parse_request_line(&request).map_err(|e| Failure::Usage(e, Some(command)))?;
            let plugin = one_config(&file)?;
            print!("{}", explain::explain(&plugin, method, path, options.host.as_deref().unwrap_or("")));
            Ok(())
        }
        "import-k3s" => import_k3s(options.positional::<1>(command)?),
        "discover" => discover_command(options.positional::<1>(command)?, &options),
        _ => clients(command, &options),
    }
}

fn find_command(name: &str) -> Result<&'static Command, Failure> {
    COMMANDS.iter().find(|command| command.name == name).ok_or_else(|| Failure::Usage(format!("unknown command {name:?}"), None))
}

/// A command's arguments: its positional ones, and the options it takes (others are refused).
#[derive(Default)]
struct Options {
    positional: Vec<String>,
    host: Option<String>,
    mirrors: Vec<String>,
    only: Option<String>,
    robot_file: Option<String>,
    ca_file: Option<String>,
}

impl Options {
    /// The arguments after `command`; `None` when they ask for its help.
    fn parse(command: &'static Command, parser: &mut Parser) -> Result<Option<Options>, Failure> {
        let usage = |error: lexopt::Error| Failure::Usage(error.to_string(), Some(command));
        let mut options = Options::default();
        while let Some(arg) = parser.next().map_err(usage)? {
            match (command.name, arg) {
                (_, Arg::Long("help") | Arg::Short('h')) => return Ok(None),
                ("explain", Arg::Long("host")) => options.host = Some(value(parser).map_err(usage)?),
                ("clients", Arg::Long("mirror")) => options.mirrors.push(value(parser).map_err(usage)?),
                ("clients", Arg::Long("only")) => options.only = Some(value(parser).map_err(usage)?),
                ("discover", Arg::Long("robot-file")) => options.robot_file = Some(value(parser).map_err(usage)?),
                ("discover", Arg::Long("ca-file")) => options.ca_file = Some(value(parser).map_err(usage)?),
                (_, Arg::Value(value)) => options.positional.push(value.string().map_err(usage)?),
                (_, arg) => return Err(usage(arg.unexpected())),
            }
        }
        Ok(Some(options))
    }

    /// Exactly `N` positional arguments.
    fn positional<const N: usize>(&self, command: &'static Command) -> Result<[String; N], Failure> {
        <[String; N]>::try_from(self.positional.clone()).map_err(|got: Vec<String>| {
            Failure::Usage(format!("{} takes {N} argument(s), got {}", command.name, got.len()), Some(command))
        })
    }
}

fn value(parser: &mut Parser) -> Result<String, lexopt::Error> {
    let value: OsString = parser.value()?;
    value.string()
}

fn check([file]: [String; 1]) -> Result<(), Failure> {
    for found in source::find(&read(&file)?).map_err(|e| Failure::Input(format!("{file}: {e}")))? {
        let label = if found.place.is_empty() { file.clone() } else { format!("{file} ({})", found.place) };
        let plugin = PluginConfig::from_json(&found.json).map_err(|e| Failure::Input(invalid(&found.place, &e)))?;
        for (index, config) in plugin.configs.iter().enumerate() {
            println!("{label}: ok{}, {}", plugin.selector.describe(index), summary(config));
        }
    }
    Ok(())
}

/// The one filter configuration in `file`, as the filter's `on_configure` reads it.
fn one_config(file: &str) -> Result<PluginConfig, Failure> {
    let mut found = source::find(&read(file)?).map_err(|e| Failure::Input(format!("{file}: {e}")))?;
    if found.len() > 1 {
        let places: Vec<&str> = found.iter().map(|found| found.place.as_str()).collect();
        return Err(Failure::Input(format!("{file}: holds {} filter configurations ({}); explain reads one", found.len(), places.join("; "))));
    }
    let found = found.pop().ok_or_else(|| Failure::Input(format!("{file}: holds no filter configuration")))?;
    PluginConfig::from_json(&found.json).map_err(|e| Failure::Input(invalid(&found.place, &e)))
}

/// The message of a configuration error, where it was found.
fn invalid(place: &str, error: &harbor_mirror_core::ConfigError) -> String {
    if place.is_empty() { format!("invalid configuration: {error}") } else { format!("invalid configuration in {place}: {error}") }
}

fn discover_command([harbor]: [String; 1], options: &Options) -> Result<(), Failure> {
    let robot = match &options.robot_file {
        Some(file) => {
            let robot: discover::Robot = serde_json::from_slice(&read(file)?).map_err(|e| Failure::Input(format!("{file}: {e}")))?;
            Some(robot)
        }
        None => None,
    };
    let ca = options.ca_file.as_deref().map(read).transpose()?;
    let built = discover::discover(&harbor, robot.as_ref(), ca.as_deref()).map_err(|e| Failure::Input(format!("{harbor}: {e}")))?;
    for warning in &built.warnings {
        eprintln!("harbor-mirror discover: {warning}");
    }
    if built.mapping.entries.is_empty() {
        return Err(Failure::Input(format!("{harbor}: harbor lists no proxy-cache project this account can see")));
    }
    let configuration = discover::configuration(&built);
    // What it prints must be what the filter accepts; a failure here is a bug.
    Config::from_json(configuration.as_bytes()).map_err(|e| Failure::Input(format!("{harbor}: the discovered configuration is invalid: {e}")))?;
    eprintln!("harbor-mirror discover: {} registries from {harbor}: {}", built.mapping.entries.len(), built.mapping);
    print!("{configuration}");
    Ok(())
}

fn import_k3s([file]: [String; 1]) -> Result<(), Failure> {
    let source = String::from_utf8(read(&file)?).map_err(|_| Failure::Input(format!("{file}: not UTF-8")))?;
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

fn clients(command: &'static Command, options: &Options) -> Result<(), Failure> {
    let [] = options.positional::<0>(command)?;
    if options.mirrors.is_empty() {
        return Err(Failure::Usage("clients: --mirror URL is required".to_owned(), Some(command)));
    }
    let mirrors = options
        .mirrors
        .iter()
        .map(|url| Mirror::parse(url))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure::Usage(e, Some(command)))?;
    match &options.only {
        Some(name) => {
            let recipe = Recipe::from_name(name).ok_or_else(|| Failure::Usage(format!("--only {name:?}: no such recipe"), Some(command)))?;
            print!("{}", recipe.render(&mirrors));
        }
        None => print!("{}", clients::all(&mirrors)),
    }
    Ok(())
}

fn read(file: &str) -> Result<Vec<u8>, Failure> {
    if file == "-" {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map_err(|e| Failure::Input(format!("stdin: {e}")))?;
        return Ok(bytes);
    }
    std::fs::read(file).map_err(|e| Failure::Input(format!("{file}: {e}")))
}

fn summary(config: &Config) -> String {
    let keys: Vec<&str> = config.registries().iter().map(|r| r.key.as_str()).collect();
    let default = config.default_registry().map(|r| r.key.as_str()).or(config.default_missing.as_deref()).unwrap_or("none");
    if let Some(discover) = &config.discover {
        let account = discover.robot.as_deref().unwrap_or("anonymously");
        let static_keys = if keys.is_empty() { String::new() } else { format!(" besides {}", keys.join(", ")) };
        return format!(
            "registries discovered from harbor's API{static_keys} (cluster {:?}, {account}, every {} s), default {default}",
            discover.cluster, discover.interval_s
        );
    }
    let auth = match (&config.auth.managed, config.auth.rewrite_tokens) {
        (Some(managed), _) => format!("managed token auth as {}", managed.username),
        (None, true) => "pass-through token auth".to_owned(),
        (None, false) => "token rewriting off".to_owned(),
    };
    let noun = if keys.len() == 1 { "registry" } else { "registries" };
    format!("{} {noun} ({}), default {default}, {auth}", keys.len(), keys.join(", "))
}
