//! `govshare corrections …` (纠错) and `govshare resident history`: the
//! correction workflow and the resident tracker from the shell. Filing and
//! following one's own corrections as a puller; listing and answering a
//! queue as the dataset's source department (or listing every queue as an
//! administrator); the tracker as the resident portal.

use super::table::Table;
use super::{Connect, say, status_error};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use govshare::proto::correction_service_client::CorrectionServiceClient;
use govshare::proto::json;
use govshare::proto::resident_service_client::ResidentServiceClient;
use govshare::proto::*;

#[derive(Args, Debug)]
pub struct CorrectionsArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    pub command: CorrectionsCommand,
}

#[derive(Subcommand, Debug)]
pub enum CorrectionsCommand {
    /// File a correction of one field of a record you may read.
    File {
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        key: String,
        #[arg(long)]
        field: String,
        /// What you believe is right.
        #[arg(long)]
        value: String,
        #[arg(long)]
        evidence: String,
        #[arg(long)]
        purpose: String,
        #[arg(long)]
        case_id: String,
    },
    /// The corrections your department filed.
    Mine {
        #[arg(long)]
        status: Option<String>,
    },
    /// A source department's queue (every queue, for an administrator).
    List {
        /// open, accepted, rejected or needs_info.
        #[arg(long)]
        status: Option<String>,
        /// Only those open past their deadline.
        #[arg(long)]
        overdue: bool,
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Answer one: --accept VERSION (the version that fixed it, published
    /// first), --reject REASON or --needs-info QUESTION.
    Answer {
        #[arg(long)]
        id: String,
        #[arg(long, group = "answer")]
        accept: Option<u64>,
        #[arg(long, group = "answer")]
        reject: Option<String>,
        #[arg(long, group = "answer")]
        needs_info: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct ResidentArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    pub command: ResidentCommand,
}

#[derive(Subcommand, Debug)]
pub enum ResidentCommand {
    /// Who used one resident's record, newest first (as the portal).
    History {
        #[arg(long)]
        id_number: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn status_arg(s: Option<&str>) -> Result<i32> {
    let Some(s) = s else { return Ok(0) };
    let name = format!("CORRECTION_STATUS_{}", s.to_ascii_uppercase());
    match CorrectionStatus::from_str_name(&name) {
        Some(st) if st != CorrectionStatus::Unspecified => Ok(st.into()),
        _ => bail!("--status: open, accepted, rejected or needs_info"),
    }
}

fn status_name(s: i32) -> String {
    CorrectionStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CORRECTION_STATUS_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn day(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

fn print(connect: &Connect, corrections: &[Correction]) -> Result<()> {
    if connect.json {
        let all = ListCorrectionsResponse {
            corrections: corrections.to_vec(),
            next_page_token: String::new(),
        };
        say(serde_json::to_string_pretty(&json::to_value(&all))?);
        return Ok(());
    }
    let mut t = Table::new(&[
        "id", "dataset", "key", "field", "status", "reporter", "due", "answer",
    ]);
    for c in corrections {
        let status = if c.overdue {
            "overdue".to_string()
        } else {
            status_name(c.status)
        };
        let answer = match c.fixed_version {
            0 => c.answer.clone(),
            v => format!("fixed in version {v}"),
        };
        t.row(vec![
            c.id.clone(),
            c.dataset.clone(),
            c.key.clone(),
            c.field.clone(),
            status,
            c.reporter_department.clone(),
            day(c.respond_by.as_ref()),
            answer,
        ]);
    }
    t.print();
    Ok(())
}

pub async fn run(args: CorrectionsArgs) -> Result<()> {
    let default = match args.command {
        CorrectionsCommand::List { .. } | CorrectionsCommand::Answer { .. } => "public-security",
        _ => "civil-affairs",
    };
    let client = args.connect.client(default).await?;
    let mut c = CorrectionServiceClient::new(client.channel.clone());
    match args.command {
        CorrectionsCommand::File {
            dataset,
            key,
            field,
            value,
            evidence,
            purpose,
            case_id,
        } => {
            let filed = c
                .file_correction(client.request(FileCorrectionRequest {
                    context: Some(PullContext {
                        purpose,
                        case_id,
                        operator: String::new(),
                    }),
                    dataset,
                    key,
                    field,
                    proposed_value: value,
                    evidence,
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            if args.connect.quiet {
                say(&filed.id);
            } else {
                print(&args.connect, &[filed])?;
            }
        }
        CorrectionsCommand::Mine { status } => {
            let status = status_arg(status.as_deref())?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = c
                    .list_my_corrections(client.request(ListMyCorrectionsRequest {
                        status,
                        page_size: 0,
                        page_token,
                    }))
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(r.corrections);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            print(&args.connect, &all)?;
        }
        CorrectionsCommand::List {
            status,
            overdue,
            dataset,
        } => {
            let (status, dataset) = (status_arg(status.as_deref())?, dataset.unwrap_or_default());
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = c
                    .list_corrections(client.request(ListCorrectionsRequest {
                        status,
                        overdue,
                        dataset: dataset.clone(),
                        page_size: 0,
                        page_token,
                    }))
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(r.corrections);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            print(&args.connect, &all)?;
        }
        CorrectionsCommand::Answer {
            id,
            accept,
            reject,
            needs_info,
        } => {
            use answer_correction_request::Answer;
            let answer = match (accept, reject, needs_info) {
                (Some(v), None, None) => Answer::AcceptedVersion(v),
                (None, Some(r), None) => Answer::RejectedReason(r),
                (None, None, Some(q)) => Answer::NeedsInfoQuestion(q),
                _ => bail!("give one of --accept VERSION, --reject REASON, --needs-info QUESTION"),
            };
            let done = c
                .answer_correction(client.request(AnswerCorrectionRequest {
                    id,
                    answer: Some(answer),
                }))
                .await
                .map_err(status_error)?
                .into_inner();
            print(&args.connect, &[done])?;
        }
    }
    Ok(())
}

pub async fn run_resident(args: ResidentArgs) -> Result<()> {
    let client = args.connect.client("resident-portal").await?;
    let mut r = ResidentServiceClient::new(client.channel.clone());
    let ResidentCommand::History { id_number, limit } = args.command;
    let h = r
        .my_access_history(client.request(MyAccessHistoryRequest {
            id_number,
            page_size: limit,
            page_token: String::new(),
        }))
        .await
        .map_err(status_error)?
        .into_inner();
    if args.connect.json {
        say(serde_json::to_string_pretty(&json::to_value(&h))?);
        return Ok(());
    }
    let mut t = Table::new(&[
        "time",
        "department",
        "purpose",
        "case",
        "fields",
        "decision",
    ]);
    for e in &h.events {
        let time = e
            .time
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map(|t| {
                t.with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        t.row(vec![
            time,
            e.department.clone(),
            format!("{} ({})", e.purpose_name, e.purpose),
            e.case_id.clone(),
            e.fields.join(","),
            AuditDecision::try_from(e.decision)
                .map(|d| {
                    d.as_str_name()
                        .trim_start_matches("AUDIT_DECISION_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default(),
        ]);
    }
    t.print();
    Ok(())
}
