//! `cri-client`: the kubelet's side of image pulls, for the end-to-end suite. It talks to
//! containerd's CRI plugin over its socket (`runtime.v1.ImageService`) the way the kubelet does:
//! `PullImage` with the pod's sandbox configuration and, from an imagePullSecret, an
//! `AuthConfig` without `server_address` (the kubelet never sets it), then `ImageStatus`.
//!
//! ```text
//! cri-client --socket PATH pull IMAGE [--user USER:PASSWORD] [--pod NAMESPACE/NAME]
//! cri-client --socket PATH status IMAGE
//! cri-client --socket PATH list
//! cri-client --socket PATH remove IMAGE
//! ```
//!
//! A pull prints the image's id and repo digests, one `key: value` a line; any failure goes to
//! stderr with a non-zero exit status.

use std::collections::HashMap;
use std::process::ExitCode;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::{
    AuthConfig, Image, ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, ListImagesRequest, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest, RemoveImageRequest,
};
use lexopt::{Arg, Parser, ValueExt};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

const USAGE: &str = "usage: cri-client --socket PATH COMMAND

commands:
  pull IMAGE [--user USER:PASSWORD] [--pod NAMESPACE/NAME]
                  PullImage as the kubelet sends it (--user: an imagePullSecret's
                  credentials, as AuthConfig without server_address), then ImageStatus
  status IMAGE    ImageStatus: the image's id and repo digests, or 'absent'
  list            ListImages: one image a line, with its repo tags and digests
  remove IMAGE    RemoveImage

--socket is containerd's gRPC socket (its CRI plugin enabled).";

/// What was asked.
enum Command {
    Pull { image: String, user: Option<(String, String)>, pod: (String, String) },
    Status { image: String },
    List,
    Remove { image: String },
}

fn main() -> ExitCode {
    let (socket, command) = match parse(Parser::from_env()) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("cri-client: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cri-client: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(&socket, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cri-client: {message}");
            ExitCode::from(1)
        }
    }
}

/// The socket and the command; `None` for `--help`.
fn parse(mut parser: Parser) -> Result<Option<(String, Command)>, String> {
    let mut socket = None;
    let mut user = None;
    let mut pod = ("default".to_owned(), "harbor-mirror-test".to_owned());
    let mut words = Vec::new();
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Arg::Long("help") | Arg::Short('h') => return Ok(None),
            Arg::Long("socket") => socket = Some(parser.value().and_then(|v| v.string()).map_err(|e| e.to_string())?),
            Arg::Long("user") => {
                let value = parser.value().and_then(|v| v.string()).map_err(|e| e.to_string())?;
                let (name, password) = value.split_once(':').ok_or("--user takes USER:PASSWORD")?;
                user = Some((name.to_owned(), password.to_owned()));
            }
            Arg::Long("pod") => {
                let value = parser.value().and_then(|v| v.string()).map_err(|e| e.to_string())?;
                let (namespace, name) = value.split_once('/').ok_or("--pod takes NAMESPACE/NAME")?;
                pod = (namespace.to_owned(), name.to_owned());
            }
            Arg::Value(value) => words.push(value.string().map_err(|e| e.to_string())?),
            arg => return Err(arg.unexpected().to_string()),
        }
    }
    let socket = socket.ok_or("--socket PATH is required")?;
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
        ["pull", image] => Command::Pull { image: (*image).to_owned(), user, pod },
        ["status", image] => Command::Status { image: (*image).to_owned() },
        ["list"] => Command::List,
        ["remove", image] => Command::Remove { image: (*image).to_owned() },
        [] => return Err("a command is required".to_owned()),
        other => return Err(format!("unknown command line {other:?}")),
    };
    Ok(Some((socket, command)))
}

async fn run(socket: &str, command: Command) -> Result<(), String> {
    let mut client = ImageServiceClient::new(connect(socket).await?);
    match command {
        Command::Pull { image, user, pod } => {
            let request = PullImageRequest { image: Some(spec(&image)), auth: user.map(auth), sandbox_config: Some(sandbox(&pod)) };
            let pulled = client.pull_image(request).await.map_err(|status| format!("PullImage {image}: {}", status.message()))?.into_inner();
            println!("image_ref: {}", pulled.image_ref);
            let status = client
                .image_status(ImageStatusRequest { image: Some(spec(&image)), verbose: false })
                .await
                .map_err(|status| format!("ImageStatus {image}: {}", status.message()))?
                .into_inner();
            let image = status.image.ok_or_else(|| format!("ImageStatus {image}: absent right after its pull"))?;
            print!("{}", describe(&image));
        }
        Command::Status { image } => {
            let status = client
                .image_status(ImageStatusRequest { image: Some(spec(&image)), verbose: false })
                .await
                .map_err(|status| format!("ImageStatus {image}: {}", status.message()))?
                .into_inner();
            match status.image {
                Some(image) => print!("{}", describe(&image)),
                None => println!("absent"),
            }
        }
        Command::List => {
            let images = client
                .list_images(ListImagesRequest { filter: None })
                .await
                .map_err(|status| format!("ListImages: {}", status.message()))?
                .into_inner()
                .images;
            for image in images {
                println!("{} tags={} digests={}", image.id, image.repo_tags.join(","), image.repo_digests.join(","));
            }
        }
        Command::Remove { image } => {
            client
                .remove_image(RemoveImageRequest { image: Some(spec(&image)) })
                .await
                .map_err(|status| format!("RemoveImage {image}: {}", status.message()))?;
            println!("removed: {image}");
        }
    }
    Ok(())
}

/// A channel to containerd's gRPC socket.
async fn connect(socket: &str) -> Result<Channel, String> {
    let path = socket.to_owned();
    // The URI is not used: every connection goes to the socket.
    Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|e| format!("{socket}: {e}"))
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec { image: image.to_owned(), annotations: HashMap::new(), user_specified_image: image.to_owned(), runtime_handler: String::new() }
}

/// An imagePullSecret's credentials as the kubelet hands them over: no `server_address`.
fn auth((username, password): (String, String)) -> AuthConfig {
    AuthConfig { username, password, ..AuthConfig::default() }
}

/// The sandbox configuration the kubelet sends with a pod's pull.
fn sandbox((namespace, name): &(String, String)) -> PodSandboxConfig {
    let uid = format!("{namespace}-{name}-0000");
    let labels = HashMap::from([
        ("io.kubernetes.pod.name".to_owned(), name.clone()),
        ("io.kubernetes.pod.namespace".to_owned(), namespace.clone()),
        ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
    ]);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: name.clone(), uid: uid.clone(), namespace: namespace.clone(), attempt: 0 }),
        hostname: name.clone(),
        log_directory: format!("/var/log/pods/{namespace}_{name}_{uid}"),
        labels,
        linux: Some(LinuxPodSandboxConfig { cgroup_parent: "/kubepods/besteffort".to_owned(), ..LinuxPodSandboxConfig::default() }),
        ..PodSandboxConfig::default()
    }
}

fn describe(image: &Image) -> String {
    format!("id: {}\nrepo_tags: {}\nrepo_digests: {}\n", image.id, image.repo_tags.join(" "), image.repo_digests.join(" "))
}
