//! `podlet image …`, `podlet images`, `podlet rmi`: the image store from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use podlet_runtime::image::import;
use podlet_runtime::image::snapshot::Snapshot;
use podlet_runtime::image::{ImageRecord, ImageStore, Reference};

/// `podlet image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import a root filesystem tar (plain, gzip or zstd) as a one-layer image.
    Import {
        /// The tar file.
        file: PathBuf,
        /// Name for the image, e.g. busybox:latest.
        name: String,
    },
    /// Load an OCI image layout (directory or tar) or a `docker save` archive.
    Load {
        /// The layout directory or archive.
        #[arg(long, short)]
        input: PathBuf,
        /// Name for the image (default: the name(s) recorded in the archive).
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    Ls {
        /// Output format.
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        /// Print only image ids.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Remove images.
    Rm {
        /// Remove even if containers use it (their snapshots keep working).
        #[arg(long, short)]
        force: bool,
        /// Image names or ids.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove blobs and layers no image or container uses.
    Prune,
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn print_images(images: &[ImageRecord], format: &str, quiet: bool) -> Result<()> {
    if quiet {
        for i in images {
            println!("{}", i.config.short());
        }
        return Ok(());
    }
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(images)?);
        return Ok(());
    }
    println!(
        "{:<45} {:<15} {:<14} {:<22} SIZE",
        "REPOSITORY", "TAG", "IMAGE ID", "CREATED"
    );
    for i in images {
        let (repo, tag) = i.name.rsplit_once(':').unwrap_or((&i.name, ""));
        println!(
            "{:<45} {:<15} {:<14} {:<22} {}",
            repo,
            tag,
            i.config.short(),
            i.created,
            human_size(i.size)
        );
    }
    Ok(())
}

/// Runs an image subcommand against the store at `root`.
pub fn run(root: &Path, cmd: &ImageCommand) -> Result<ExitCode> {
    let store = ImageStore::open(root).context("image store")?;
    match cmd {
        ImageCommand::Import { file, name } => {
            let reference = Reference::parse(name)?;
            if !file.exists() {
                bail!("{}: no such file", file.display());
            }
            let rec = import::import_rootfs_tar(&store, file, &reference, None)?;
            println!("{}", rec.config);
        }
        ImageCommand::Load { input, name } => {
            let reference = name.as_deref().map(Reference::parse).transpose()?;
            if !input.exists() {
                bail!("{}: no such file or directory", input.display());
            }
            for rec in import::load(&store, input, reference.as_ref())? {
                println!("Loaded image: {}", rec.name);
            }
        }
        ImageCommand::Ls { format, quiet } => print_images(&store.list()?, format, *quiet)?,
        ImageCommand::Rm { force, images } => {
            let mut failed = false;
            for name in images {
                match remove_image(&store, name, *force) {
                    Ok(rec) => println!("Untagged: {}", rec.name),
                    Err(e) => {
                        eprintln!("podlet: {e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        ImageCommand::Prune => {
            let in_use: Vec<PathBuf> = Snapshot::list(&store)
                .into_iter()
                .flat_map(|s| s.layers)
                .collect();
            let (n, bytes) = store.prune(&in_use)?;
            println!(
                "Removed {n} unused blobs and layers, {} freed",
                human_size(bytes)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn remove_image(store: &ImageStore, name: &str, force: bool) -> Result<ImageRecord> {
    let rec = store.resolve(name)?;
    let users: Vec<String> = Snapshot::list(store)
        .into_iter()
        .filter(|s| s.image == rec.name)
        .filter_map(|s| s.dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if !users.is_empty() && !force {
        return Err(podlet_runtime::image::ImageError::InUse {
            image: rec.name.clone(),
            containers: users.join(", "),
        }
        .into());
    }
    Ok(store.untag(&rec.name)?)
}

/// Registry flags shared by `pull` and `push`.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Verify TLS (false: plain HTTP, for test registries; loopback registries always are).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// USER:PASSWORD for the registry (or PODLET_REGISTRY_CREDS).
    #[arg(long)]
    creds: Option<String>,
}

fn client(a: &RegistryArgs) -> Result<podlet_runtime::image::registry::RegistryClient> {
    let creds = a
        .creds
        .clone()
        .or_else(|| std::env::var("PODLET_REGISTRY_CREDS").ok())
        .map(|c| match c.split_once(':') {
            Some((u, p)) => Ok((u.to_string(), p.to_string())),
            None => Err(anyhow::anyhow!("--creds: expected USER:PASSWORD")),
        })
        .transpose()?;
    Ok(podlet_runtime::image::registry::RegistryClient::new(
        !a.tls_verify,
        creds,
    ))
}

/// `podlet pull REF`.
pub fn pull(root: &Path, reference: &str, a: &RegistryArgs) -> Result<ExitCode> {
    let store = ImageStore::open(root).context("image store")?;
    let r = Reference::parse(reference)?;
    let rec = client(a)?.pull(&store, &r, crate::progress::for_stderr().as_ref())?;
    eprintln!("Pulled {} ({})", rec.name, rec.manifest);
    println!("{}", rec.config);
    Ok(ExitCode::SUCCESS)
}

/// `podlet push NAME [DEST]`.
pub fn push(root: &Path, name: &str, dest: Option<&str>, a: &RegistryArgs) -> Result<ExitCode> {
    let store = ImageStore::open(root).context("image store")?;
    let image = store.resolve(name)?;
    let dest = Reference::parse(dest.unwrap_or(&image.name))?;
    let digest = client(a)?.push(
        &store,
        &image,
        &dest,
        crate::progress::for_stderr().as_ref(),
    )?;
    eprintln!("Pushed {}", dest.canonical());
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}
