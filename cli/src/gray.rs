//! `coordctl config gray …`: a key's gray release, for the instances whose
//! labels match its selector.

use coordkit::config::Labels;
use coordkit::ConfigCenter;
use serde_json::{json, Value};

use crate::exit::{Failure, Outcome};
use crate::{output, Ctx};

/// `coordctl config gray`.
#[derive(clap::Subcommand, Debug)]
pub enum GrayCommand {
    /// Publish VALUE (JSON) as KEY's gray release for the managers whose
    /// labels match every --selector label=value; the main value stays.
    #[command(
        after_help = "Example: coordctl config gray set prod/shop/limit 200 --selector zone=eu-1"
    )]
    Set {
        key: String,
        value: String,
        /// A label the instances must have, `name=value`; repeatable.
        #[arg(long = "selector", value_name = "LABEL=VALUE", required = true)]
        selector: Vec<String>,
    },
    /// Print KEY's gray release: selector, value, version (exit 3 if none).
    #[command(after_help = "Example: coordctl config gray show prod/shop/limit")]
    Show { key: String },
    /// Make KEY's gray release its main value (in its history) and remove the
    /// release, only if the release is at --if-version (default: the version
    /// read now); exit 4 if it moved.
    #[command(
        after_help = "Example: coordctl config gray promote prod/shop/limit --if-version 42"
    )]
    Promote {
        key: String,
        #[arg(long)]
        if_version: Option<i64>,
    },
    /// Remove KEY's gray release (only at --if-version, if given): every
    /// manager serves the main value again.
    #[command(after_help = "Example: coordctl config gray drop prod/shop/limit")]
    Drop {
        key: String,
        #[arg(long)]
        if_version: Option<i64>,
    },
}

pub async fn run(ctx: &Ctx, config: &ConfigCenter, command: GrayCommand) -> Outcome {
    match command {
        GrayCommand::Set {
            key,
            value,
            selector,
        } => {
            let value: Value = serde_json::from_str(&value)
                .map_err(|e| Failure::bad_input(format!("the value of {key} is not JSON: {e}")))?;
            let version = config.set_gray(&key, &value, labels(&selector)?).await?;
            output::record(
                ctx.format,
                &[("key", key.clone()), ("gray version", version.to_string())],
                json!({"key": key, "gray_version": version}),
            );
        }
        GrayCommand::Show { key } => {
            let gray = config
                .gray(&key)
                .await?
                .ok_or_else(|| coordkit::Error::NotFound {
                    key: format!("gray release of {key}"),
                })?;
            let text = String::from_utf8_lossy(&gray.value).into_owned();
            let selector: Vec<String> = gray
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            output::record(
                ctx.format,
                &[
                    ("key", key.clone()),
                    ("selector", selector.join(",")),
                    ("version", gray.version.to_string()),
                    ("value", text.clone()),
                ],
                json!({"key": key, "selector": gray.selector, "version": gray.version,
                       "value": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text))}),
            );
        }
        GrayCommand::Promote { key, if_version } => {
            let expected = expected(config, &key, if_version).await?;
            let version = config.promote_gray(&key, expected).await?;
            output::record(
                ctx.format,
                &[("promoted", key.clone()), ("version", version.to_string())],
                json!({"promoted": key, "version": version}),
            );
        }
        GrayCommand::Drop { key, if_version } => {
            let expected = expected(config, &key, if_version).await?;
            config.drop_gray(&key, expected).await?;
            output::record(
                ctx.format,
                &[("dropped", key.clone())],
                json!({"dropped": key}),
            );
        }
    }
    Ok(())
}

/// The version to compare on: the one given, else the release's now.
async fn expected(config: &ConfigCenter, key: &str, given: Option<i64>) -> Outcome<i64> {
    if let Some(v) = given {
        return Ok(v);
    }
    let gray = config
        .gray(key)
        .await?
        .ok_or_else(|| coordkit::Error::NotFound {
            key: format!("gray release of {key}"),
        })?;
    Ok(gray.version)
}

fn labels(pairs: &[String]) -> Outcome<Labels> {
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| Failure::bad_input(format!("--selector {p}: LABEL=VALUE")))
        })
        .collect()
}
