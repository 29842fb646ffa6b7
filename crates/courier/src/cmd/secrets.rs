//! `courier secrets rotate`: re-seal every destination's secret with the current key.

use anyhow::Context as _;

use crate::common::{RedisArgs, SecretArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Re-seal every destination's secret with COURIER_SECRET_KEY, opening it with that key
    /// or one of COURIER_PREVIOUS_SECRET_KEYS. Safe to run while the fleet delivers (give
    /// the fleet both keys first) and to run again: it resumes where it stopped. Exits 1 if
    /// some secret could not be opened or changed while it ran.
    ///
    /// Rotation: (1) deploy the fleet with the new COURIER_SECRET_KEY and the old one in
    /// COURIER_PREVIOUS_SECRET_KEYS; (2) run this until it reports nothing left; (3) remove
    /// the old key.
    Rotate {
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        secret: SecretArgs,
    },
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Rotate { redis, secret } => {
            let cipher = secret.cipher()?;
            let conn = redis.connect().await?;
            let store =
                courier_store::DestinationStore::new(conn, redis.keys(), Some(cipher.clone()));
            let done = store
                .reseal_all()
                .await
                .context("re-sealing destinations")?;
            println!(
                "{} re-sealed with key {}, {} already current, {} changed meanwhile (run again), \
                 {} could not be opened",
                done.resealed,
                cipher.key_id(),
                done.current,
                done.raced,
                done.unopenable.len()
            );
            for id in &done.unopenable {
                eprintln!("cannot open the secret of {id}: its key is in neither setting");
            }
            if done.raced > 0 || !done.unopenable.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
