//! `govshare pull …`: a department system's first pull from the shell.
//! Prints the records (as proto JSON) with their audit receipt.

use super::{Connect, status_error};
use anyhow::Result;
use clap::{Args, Subcommand};
use govshare::proto::json;
use govshare::proto::population_service_client::PopulationServiceClient;
use govshare::proto::{GetPersonRequest, ListPersonsRequest, PullContext};

#[derive(Args, Debug)]
pub struct PullArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Purpose code the grant lists.
    #[arg(long, global = true, default_value = "")]
    pub purpose: String,
    /// The business case this pull serves.
    #[arg(long, global = true, default_value = "")]
    pub case_id: String,
    /// The person at the keyboard, for the audit log.
    #[arg(long, global = true, default_value = "")]
    pub operator: String,
    #[command(subcommand)]
    pub command: PullCommand,
}

#[derive(Subcommand, Debug)]
pub enum PullCommand {
    /// One person by citizen ID.
    Person {
        #[arg(long)]
        id: String,
    },
    /// Persons under a region code: at most --limit records, in one call
    /// that the gateway ends cleanly after them.
    Persons {
        #[arg(long)]
        region: String,
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
}

pub async fn run(args: PullArgs) -> Result<()> {
    let Some(identity) = args.connect.identity.clone() else {
        anyhow::bail!("--identity: name the department identity to pull as, e.g. civil-affairs");
    };
    let client = args.connect.client(&identity).await?;
    let mut population = PopulationServiceClient::new(client.channel.clone());
    let context = Some(PullContext {
        purpose: args.purpose,
        case_id: args.case_id,
        operator: args.operator,
    });
    match args.command {
        PullCommand::Person { id } => {
            let r = population
                .get_person(client.request(GetPersonRequest {
                    context,
                    id_number: id,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            super::say(serde_json::to_string_pretty(&json::to_value(&r))?);
        }
        PullCommand::Persons { region, limit } => {
            let mut pages = population
                .list_persons(client.request(ListPersonsRequest {
                    context,
                    region_prefix: region,
                    page_size: limit.clamp(1, 1000),
                    max_records: limit.max(1),
                    ..Default::default()
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            while let Some(page) = pages.message().await.map_err(status_error)? {
                super::say(serde_json::to_string_pretty(&json::to_value(&page))?);
            }
        }
    }
    Ok(())
}
