//! `coordctl config …`: the config center from the command line.

use std::io::Read;
use std::path::PathBuf;

use coordkit::config::{ConfigVersion, Keyring};
use coordkit::{ConfigCenter, ConfigEventKind, Error};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::signal::unix::{signal, SignalKind};

use crate::diff::{diff, indent};
use crate::exit::{Failure, Outcome};
use crate::{output, Ctx};

/// `coordctl config`.
#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print KEY's value and version. An encrypted value prints as stored
    /// (sealed) unless --keyring opens it.
    #[command(
        after_help = "Examples: coordctl config get app/limits\n          coordctl config get secrets/db --keyring keys.txt"
    )]
    Get {
        key: String,
        /// Open the value with these keys: a file of lines `ID BASE64-KEY`
        /// (32-byte AES-256 keys), the first the current one.
        #[arg(long)]
        keyring: Option<PathBuf>,
    },
    /// Write KEY: the value (JSON) from the argument, --file, or stdin ("-" or
    /// nothing); --if-version N writes only if the current version is N (0: only
    /// if absent), else exits 4 printing the current version.
    #[command(
        after_help = "Examples: coordctl config set app/limits '{\"rps\": 100}'\n          coordctl config set app/limits --file limits.json --if-version 42"
    )]
    Set {
        key: String,
        value: Option<String>,
        /// Read the value from this file.
        #[arg(long, conflicts_with = "value")]
        file: Option<PathBuf>,
        /// Compare-and-set on this version.
        #[arg(long)]
        if_version: Option<i64>,
        /// Encrypt the value with the first key of this file (see `get`).
        #[arg(long)]
        keyring: Option<PathBuf>,
    },
    /// Delete KEY (exit 3 if it does not exist); --if-version N deletes only
    /// that version, else exits 4 printing the current one.
    #[command(after_help = "Example: coordctl config delete app/old --if-version 42")]
    Delete {
        key: String,
        /// Delete only if the current version is this one.
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// List the keys under PREFIX (all without it).
    #[command(after_help = "Example: coordctl config list app/")]
    List { prefix: Option<String> },
    /// Print each change of KEY (or of every key under it with --prefix) as it
    /// happens, resyncs after compaction included, until SIGINT/SIGTERM.
    #[command(after_help = "Example: coordctl config watch app/ --prefix -o json")]
    Watch {
        key: String,
        #[arg(long)]
        prefix: bool,
    },
    /// KEY's versions, newest first, with a diff between neighbours.
    #[command(after_help = "Example: coordctl config history app/limits --limit 5")]
    History {
        key: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Write KEY's value of version --to again; --if-version N writes it only
    /// over version N (the one you reviewed), else exits 4 printing the current
    /// version. Without it, a compare-and-set on the version current at the call.
    #[command(after_help = "Example: coordctl config rollback app/limits --to 42 --if-version 57")]
    Rollback {
        key: String,
        #[arg(long)]
        to: i64,
        /// Roll back only if the current version is this one.
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Write the keys under PREFIX (all without it) to a reviewable file: each
    /// key with its codec, version and exact value (text, or base64 when not
    /// UTF-8), in key order, read at one revision.
    #[command(
        after_help = "Examples: coordctl config export app/ -f app.yaml\n          coordctl config export --format json --codec-for app/toml/=toml > all.json"
    )]
    Export(crate::transfer::ExportArgs),
    /// Show what FILE (from `config export`) would change here, as a diff per
    /// key, then apply it with compare-and-set on what was diffed against: all
    /// in one transaction when it fits, else in ordered batches (exit 4 on a key
    /// changed meanwhile, saying what was applied); --dry-run shows only.
    #[command(after_help = "Example: coordctl config import app.yaml --dry-run")]
    Import(crate::transfer::ImportArgs),
    /// A key's gray release: set, show, promote, drop.
    #[command(subcommand)]
    Gray(crate::gray::GrayCommand),
    /// The difference between two versions of KEY (the second defaults to the
    /// current one).
    #[command(after_help = "Example: coordctl config diff app/limits 42")]
    Diff {
        key: String,
        from: i64,
        to: Option<i64>,
    },
}

pub async fn run(ctx: &Ctx, command: ConfigCommand) -> Outcome {
    let config = &ctx.coordinator.config();
    match command {
        ConfigCommand::Get { key, keyring } => {
            let config = &sealed(config, &key, keyring.as_deref())?;
            get(ctx, config, key).await
        }
        ConfigCommand::Set {
            key,
            value,
            file,
            if_version,
            keyring,
        } => {
            let config = &sealed(config, &key, keyring.as_deref())?;
            set(ctx, config, key, value, file, if_version).await
        }
        ConfigCommand::Delete { key, if_version } => delete(ctx, config, key, if_version).await,
        ConfigCommand::List { prefix } => list(ctx, config, prefix).await,
        ConfigCommand::Watch { key, prefix } => watch(ctx, config, key, prefix).await,
        ConfigCommand::History { key, limit } => history(ctx, config, key, limit).await,
        ConfigCommand::Rollback {
            key,
            to,
            if_version,
        } => rollback(ctx, config, key, to, if_version).await,
        ConfigCommand::Diff { key, from, to } => show_diff(ctx, config, key, from, to).await,
        ConfigCommand::Export(args) => crate::transfer::export(ctx, args).await,
        ConfigCommand::Gray(command) => crate::gray::run(ctx, config, command).await,
        ConfigCommand::Import(args) => crate::transfer::import(ctx, args).await,
    }
}

/// `config` with `key` encrypted by the keyring in `path`, if given.
fn sealed(
    config: &ConfigCenter,
    key: &str,
    path: Option<&std::path::Path>,
) -> Outcome<ConfigCenter> {
    let Some(path) = path else {
        return Ok(config.clone());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", path.display())))?;
    let mut ring: Option<Keyring> = None;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (id, b64) = line.split_once(char::is_whitespace).ok_or_else(|| {
            Failure::bad_input(format!("{}: a line is `ID BASE64-KEY`", path.display()))
        })?;
        let bytes = base64_key(b64.trim())?;
        ring = Some(match ring {
            None => Keyring::new(id, bytes)?,
            Some(r) => r.with_previous(id, bytes)?,
        });
    }
    let ring = ring.ok_or_else(|| Failure::bad_input(format!("{}: no key", path.display())))?;
    Ok(config.with_encryption_for(key, ring)?)
}

fn base64_key(b64: &str) -> Outcome<[u8; 32]> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| Failure::bad_input(format!("a key is base64: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| Failure::bad_input("a key is 32 bytes"))
}

/// Print KEY's value and version (opened, when the center encrypts it).
async fn get(ctx: &Ctx, config: &ConfigCenter, key: String) -> Outcome {
    let (bytes, version) = if config.is_encrypted(&key) {
        let (value, version) = config.get_with_version::<Value>(&key).await?;
        (value.to_string().into_bytes(), version)
    } else {
        config.get_bytes_with_version(&key).await?
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    output::record(
        ctx.format,
        &[
            ("key", key.clone()),
            ("version", version.to_string()),
            ("value", text.clone()),
        ],
        json!({"key": key, "version": version, "value": as_json(&bytes)}),
    );
    Ok(())
}

/// Write KEY (a compare-and-set with `if_version`).
async fn set(
    ctx: &Ctx,
    config: &ConfigCenter,
    key: String,
    value: Option<String>,
    file: Option<PathBuf>,
    if_version: Option<i64>,
) -> Outcome {
    let bytes = match (value, file) {
        (Some(v), _) if v != "-" => v.into_bytes(),
        (_, Some(path)) => std::fs::read(&path)
            .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", path.display())))?,
        _ => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        }
    };
    let value = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return Err(Failure::bad_input(format!(
                "the value of {key} is not JSON: {e}"
            )))
        }
    };
    let version = match (if_version, config.is_encrypted(&key)) {
        (Some(expected), true) => config.compare_and_set(&key, &value, expected).await,
        (None, true) => config.set(&key, &value).await,
        (Some(expected), false) => config.compare_and_set_bytes(&key, bytes, expected).await,
        (None, false) => config.set_bytes(&key, bytes).await,
    }
    .map_err(|e| conflict(e, if_version.unwrap_or(0)))?;
    output::record(
        ctx.format,
        &[("key", key.clone()), ("version", version.to_string())],
        json!({"key": key, "version": version}),
    );
    Ok(())
}

/// Delete KEY (only its version `if_version`, if given).
async fn delete(ctx: &Ctx, config: &ConfigCenter, key: String, if_version: Option<i64>) -> Outcome {
    match if_version {
        Some(expected) => config
            .delete_if_version(&key, expected)
            .await
            .map_err(|e| conflict(e, expected))?,
        None => {
            if !config.delete(&key).await? {
                return Err(Error::NotFound { key }.into());
            }
        }
    }
    output::record(
        ctx.format,
        &[("deleted", key.clone())],
        json!({"deleted": key}),
    );
    Ok(())
}

/// List the keys under `prefix`.
async fn list(ctx: &Ctx, config: &ConfigCenter, prefix: Option<String>) -> Outcome {
    let keys = config.list(prefix.as_deref().unwrap_or("")).await?;
    let rows: Vec<Vec<String>> = keys.iter().map(|k| vec![k.clone()]).collect();
    output::rows(ctx.format, &["KEY"], &rows, |i| json!({"key": keys[i]}));
    Ok(())
}

/// Print each change of KEY (or under it) until SIGINT/SIGTERM.
async fn watch(ctx: &Ctx, config: &ConfigCenter, key: String, prefix: bool) -> Outcome {
    let mut watcher = if prefix {
        config.watch_prefix::<Value>(&key).await?
    } else {
        config.watch::<Value>(&key).await?
    };
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    loop {
        let event = tokio::select! {
            e = watcher.next() => e,
            _ = interrupted.recv() => return Ok(()),
            _ = terminated.recv() => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        match event {
            Ok(e) => {
                let kind = if e.kind == ConfigEventKind::Delete {
                    "delete"
                } else {
                    "put"
                };
                match ctx.format {
                    output::Format::Json => println!(
                        "{}",
                        json!({"event": kind, "key": e.key, "version": e.version, "value": e.value, "resync": e.resync})
                    ),
                    output::Format::Table => println!(
                        "{kind:<6}  {}  v{}{}  {}",
                        e.key,
                        e.version,
                        if e.resync { " (resync)" } else { "" },
                        e.value.map_or(String::new(), |v| v.to_string())
                    ),
                }
            }
            Err(e @ Error::Codec { .. }) => eprintln!("coordctl: {e}"),
            Err(e) => eprintln!("coordctl: {e} (reconnecting)"),
        }
    }
}

/// Print KEY's versions, newest first, with a diff between neighbours.
async fn history(ctx: &Ctx, config: &ConfigCenter, key: String, limit: usize) -> Outcome {
    let versions = config.history_bytes(&key, limit.max(1)).await?;
    match ctx.format {
        output::Format::Json => {
            for (i, v) in versions.iter().enumerate() {
                let diff = versions
                    .get(i + 1)
                    .map(|older| diff(&older.value, &v.value));
                println!(
                    "{}",
                    json!({"key": key, "version": v.version, "value": as_json(&v.value), "diff_from_previous": diff})
                );
            }
        }
        output::Format::Table => {
            for (i, v) in versions.iter().enumerate() {
                println!(
                    "version {}  {}",
                    v.version,
                    String::from_utf8_lossy(&v.value)
                );
                if let Some(older) = versions.get(i + 1) {
                    print!("{}", indent(&diff(&older.value, &v.value)));
                }
            }
        }
    }
    Ok(())
}

/// Write KEY's value of version `to` again (only over `if_version`, if given).
async fn rollback(
    ctx: &Ctx,
    config: &ConfigCenter,
    key: String,
    to: i64,
    if_version: Option<i64>,
) -> Outcome {
    let version = match if_version {
        Some(expected) => config
            .rollback_if_version(&key, to, expected)
            .await
            .map_err(|e| conflict(e, expected))?,
        None => config.rollback(&key, to).await?,
    };
    output::record(
        ctx.format,
        &[
            ("key", key.clone()),
            ("version", version.to_string()),
            ("rolled_back_to", to.to_string()),
        ],
        json!({"key": key, "version": version, "rolled_back_to": to}),
    );
    Ok(())
}

/// Print the difference between two versions of KEY.
async fn show_diff(
    ctx: &Ctx,
    config: &ConfigCenter,
    key: String,
    from: i64,
    to: Option<i64>,
) -> Outcome {
    let versions = config.history_bytes(&key, usize::MAX).await?;
    let find = |v: i64| -> Outcome<&ConfigVersion<Vec<u8>>> {
        versions.iter().find(|c| c.version == v).ok_or_else(|| {
            Failure::new(
                crate::exit::NOT_FOUND,
                format!("{v} is not a kept version of {key}"),
            )
        })
    };
    let old = find(from)?;
    let new = match to {
        Some(v) => find(v)?,
        None => &versions[0],
    };
    let text = diff(&old.value, &new.value);
    match ctx.format {
        output::Format::Json => println!(
            "{}",
            json!({"key": key, "from": old.version, "to": new.version, "diff": text})
        ),
        output::Format::Table => print!("{text}"),
    }
    Ok(())
}
/// A version conflict as the line that says which version is current.
fn conflict(e: Error, expected: i64) -> Failure {
    match e {
        Error::VersionConflict { key, current } => Failure::new(
            crate::exit::CONFLICT,
            format!("{key} is at version {current}, not {expected}"),
        ),
        e => e.into(),
    }
}

/// A value as JSON if it is, else as a string.
fn as_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
