//! `coordctl config export` and `import`: a prefix's keys as a reviewable
//! file, and that file applied elsewhere with compare-and-set on what was
//! diffed against.

use std::path::PathBuf;

use coordkit::config::{ConfigExport, ImportPlan};
use coordkit::{Codec, ConfigCenter};
use serde_json::json;

use crate::exit::{self, Failure, Outcome};
use crate::{output, Ctx};

/// The file's format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// YAML (multi-line values as blocks): for review.
    Yaml,
    /// JSON.
    Json,
}

/// `config export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Export only the keys under this prefix (all without it).
    prefix: Option<String>,
    /// The file's format.
    #[arg(long, value_enum, default_value_t = FileFormat::Yaml)]
    format: FileFormat,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    #[command(flatten)]
    codecs: CodecArgs,
}

/// `config import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The file `config export` wrote (YAML or JSON).
    file: PathBuf,
    /// Print the diff only; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also delete the keys under the file's prefix that it does not name.
    #[arg(long)]
    prune: bool,
    #[command(flatten)]
    codecs: CodecArgs,
}

/// The codecs of key prefixes, as the applications use them.
#[derive(clap::Args, Debug)]
pub struct CodecArgs {
    /// The codec of the keys under a prefix (PREFIX=json|toml|yaml|text),
    /// repeatable; other keys are JSON. Import checks each text value in it.
    #[arg(long = "codec-for", value_name = "PREFIX=CODEC")]
    codec_for: Vec<String>,
}

impl CodecArgs {
    fn center(&self, ctx: &Ctx) -> Outcome<ConfigCenter> {
        let mut center = ctx.coordinator.config();
        for pair in &self.codec_for {
            let (prefix, name) = pair
                .split_once('=')
                .ok_or_else(|| Failure::bad_input(format!("--codec-for {pair}: PREFIX=CODEC")))?;
            let codec = match name {
                "json" => Codec::Json,
                "toml" => Codec::Toml,
                "yaml" => Codec::Yaml,
                "text" => Codec::Text,
                other => {
                    return Err(Failure::bad_input(format!(
                        "--codec-for {pair}: {other} is not json, toml, yaml or text"
                    )))
                }
            };
            center = center.with_codec_for(prefix, codec)?;
        }
        Ok(center)
    }
}

/// Write the prefix's keys to the file or stdout.
pub async fn export(ctx: &Ctx, args: ExportArgs) -> Outcome {
    let center = args.codecs.center(ctx)?;
    let export = center.export(args.prefix.as_deref().unwrap_or("")).await?;
    let text = match args.format {
        FileFormat::Yaml => serde_yaml_ng::to_string(&export)
            .map_err(|e| Failure::new(exit::FAILED, format!("cannot write YAML: {e}")))?,
        FileFormat::Json => {
            let mut t = serde_json::to_string_pretty(&export).unwrap_or_default();
            t.push('\n');
            t
        }
    };
    match &args.file {
        None => print!("{text}"),
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text)
                .and_then(|()| std::fs::rename(&tmp, path))
                .map_err(|e| {
                    Failure::new(
                        exit::FAILED,
                        format!("cannot write {}: {e}", path.display()),
                    )
                })?;
            eprintln!(
                "{} keys at revision {} written to {}",
                export.keys.len(),
                export.revision,
                path.display()
            );
        }
    }
    Ok(())
}

/// Print the diff against the store, then (unless --dry-run) apply it.
pub async fn import(ctx: &Ctx, args: ImportArgs) -> Outcome {
    let center = args.codecs.center(ctx)?;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", args.file.display())))?;
    let document: ConfigExport = serde_yaml_ng::from_str(&text).map_err(|e| {
        Failure::bad_input(format!("{} is not an export: {e}", args.file.display()))
    })?;
    let plan = center.plan_import(&document, args.prune).await?;
    show_plan(ctx, &plan);
    if args.dry_run || plan.changes.is_empty() {
        return Ok(());
    }
    let report = center.apply_import(&plan).await;
    for (keys, version) in &report.applied {
        match ctx.format {
            output::Format::Json => println!("{}", json!({"applied": keys, "version": version})),
            output::Format::Table => println!("applied {} keys at version {version}", keys.len()),
        }
    }
    match report.failed {
        None => Ok(()),
        Some((keys, error)) => {
            let applied: usize = report.applied.iter().map(|(k, _)| k.len()).sum();
            let why = format!(
                "{error}: a batch of {} keys (from {}) was not applied; {applied} keys were before it; \
                 run the import again to see what is left",
                keys.len(),
                keys.first().map(String::as_str).unwrap_or_default()
            );
            Err(Failure::new(Failure::from(error).code, why))
        }
    }
}

/// Each change as a diff (table), or one JSON line each.
fn show_plan(ctx: &Ctx, plan: &ImportPlan) {
    for change in &plan.changes {
        let before = change.before.as_ref().map(|(_, v)| v.as_slice());
        let version = change.before.as_ref().map_or(0, |(v, _)| *v);
        match ctx.format {
            output::Format::Json => println!(
                "{}",
                json!({
                    "key": change.key,
                    "action": action(before.is_some(), change.after.is_some()),
                    "over_version": version,
                })
            ),
            output::Format::Table => {
                println!(
                    "{} {} (over version {version})",
                    action(before.is_some(), change.after.is_some()),
                    change.key
                );
                print!(
                    "{}",
                    crate::diff::indented_diff(
                        before.unwrap_or_default(),
                        change.after.as_deref().unwrap_or_default()
                    )
                );
            }
        }
    }
    if ctx.format == output::Format::Table {
        println!(
            "{} to change, {} unchanged",
            plan.changes.len(),
            plan.unchanged
        );
    }
}

fn action(before: bool, after: bool) -> &'static str {
    match (before, after) {
        (false, _) => "create",
        (true, true) => "update",
        (true, false) => "delete",
    }
}
