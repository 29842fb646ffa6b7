//! `courier dlq list | replay`: dead letters, the deliveries that failed for good (or whose
//! task could not be read), and bringing them back.

use chrono::Utc;
use courier_core::delivery::DeliveryStatus;
use courier_core::{DeliveryId, DestinationId};
use courier_store::{DeadLetter, DeadLetters, DeliveryQueue, RecordStore};

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
    let keys = args.redis.keys();
    let queue = DeliveryQueue::new(conn.clone(), &keys);
    let dead = DeadLetters::new(conn.clone(), keys.clone(), queue);
    let records = RecordStore::new(conn, keys);
    match args.command {
        Command::List { destination, json } => {
            let dest = destination
                .as_deref()
                .map(DestinationId::parse)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            for letter in dead.list().await? {
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
            let letters: Vec<DeadLetter> = dead
                .list()
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
                if let Ok(id) = DeliveryId::parse(&letter.id)
                    && let Some(mut record) = records.get_any(&id).await?
                {
                    record.status = DeliveryStatus::Queued;
                    record.updated_at = Utc::now();
                    records.put(&record).await?;
                }
                if dead.replay(letter).await? {
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
