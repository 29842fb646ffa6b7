//! `courier dlq list | replay`: dead letters, the deliveries that failed for good (or whose
//! task could not be read), and bringing them back.

use courier_core::DestinationId;
use courier_producer::{Rules, Service};
use courier_store::DeadLetter;

use crate::common::RedisArgs;
use crate::progress::Progress;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    redis: RedisArgs,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// List dead letters, oldest first: id, destination, code, when, reason.
    List {
        /// Only those of this destination.
        #[arg(long)]
        destination: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back into the queue: by id, by destination, or all.
    Replay {
        /// Dead letter ids (delivery ids).
        ids: Vec<String>,
        /// Every dead letter of this destination.
        #[arg(long, conflicts_with = "ids")]
        destination: Option<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with_all = ["ids", "destination"])]
        all: bool,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let conn = args.redis.connect().await?;
    // Dead letters need no destination secrets, hence no cipher.
    let service = Service::new(conn, args.redis.keys(), None, Rules::default());
    match args.command {
        Command::List { destination, json } => {
            let dest = destination
                .as_deref()
                .map(DestinationId::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            for letter in service.dead_letters().await? {
                if dest.is_some() && letter.destination_id != dest {
                    continue;
                }
                if json {
                    let mut v = serde_json::to_value(&letter)?;
                    if let Some(o) = v.as_object_mut() {
                        o.remove("payload");
                    }
                    println!("{v}");
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        letter.id,
                        letter
                            .destination_id
                            .as_ref()
                            .map_or("-".into(), ToString::to_string),
                        letter.code,
                        letter.died_at.to_rfc3339(),
                        letter.reason
                    );
                }
            }
        }
        Command::Replay {
            ids,
            destination,
            all,
        } => {
            anyhow::ensure!(
                all || destination.is_some() || !ids.is_empty(),
                "name dead letter ids, or --destination ID, or --all"
            );
            let dest = destination
                .as_deref()
                .map(DestinationId::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let letters: Vec<DeadLetter> = service
                .dead_letters()
                .await?
                .into_iter()
                .filter(|l| {
                    all || ids.contains(&l.id) || (dest.is_some() && l.destination_id == dest)
                })
                .collect();
            if !ids.is_empty() {
                for id in &ids {
                    anyhow::ensure!(letters.iter().any(|l| &l.id == id), "no dead letter {id}");
                }
            }
            let (mut replayed, mut skipped) = (0, 0);
            let mut progress = Progress::new(letters.len() as u64, "replaying", false);
            for letter in &letters {
                if service.replay_dead_letter(letter).await? {
                    replayed += 1;
                } else {
                    skipped += 1;
                    eprintln!(
                        "kept {}: its payload is not a delivery task ({})",
                        letter.id, letter.code
                    );
                }
                progress.advance(1);
            }
            progress.finish();
            println!("{replayed} replayed, {skipped} kept");
        }
    }
    Ok(())
}
