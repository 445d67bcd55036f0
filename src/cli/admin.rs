//! `govshare admin …`: every AdminService call from the shell.

use super::table::Table;
use super::{Connect, status_error};
use anyhow::{Context, Result, bail};
use chrono::{Local, NaiveDate, TimeZone};
use clap::{Args, Subcommand};
use govshare::datasets::catalog::parse_view;
use govshare::proto::admin_service_client::AdminServiceClient;
use govshare::proto::json::{self, Named};
use govshare::proto::*;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connect: Connect,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Departments: create, list, suspend, resume.
    #[command(subcommand)]
    Dept(DeptCommand),
    /// Register a department's client certificate (must chain to the client CA).
    #[command(subcommand)]
    Cert(CertCommand),
    /// Issue and revoke bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Rotate the token-signing key.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Grants: create, revoke, list.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Access requests (申请 → 审批): submit, list, decide.
    #[command(subcommand)]
    Request(RequestCommand),
    /// The data catalog: fields, sensitivity, sharing class per view.
    Catalog,
    /// The purpose registry: register, retire, list.
    #[command(subcommand)]
    Purpose(PurposeCommand),
    /// Enrol the first administrator of a production gateway, once, on its
    /// host (the gateway stopped or running).
    Bootstrap(BootstrapArgs),
    /// Let a restored gateway serve data again (after re-applying what was
    /// revoked since its snapshot).
    ConfirmRestore {
        /// What was checked, for the log.
        #[arg(long, default_value = "")]
        note: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum PurposeCommand {
    Register {
        /// e.g. housing-security
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        legal_basis: String,
        /// Only these departments may cite it (repeat; default: any).
        #[arg(long = "dept")]
        departments: Vec<String>,
    },
    Retire {
        #[arg(long)]
        code: String,
        #[arg(long)]
        reason: String,
    },
    List,
}

#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// The gateway's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The admin department's id; must be one of the config's admin_departments.
    #[arg(long)]
    pub dept: String,
    /// The department's official name (default: its id).
    #[arg(long)]
    pub name: Option<String>,
    /// The administrator's client certificate (PEM), issued by the client CA.
    #[arg(long)]
    pub cert: PathBuf,
    /// The administrator's client system (`sub`).
    #[arg(long, default_value = "admin")]
    pub subject: String,
    /// Where to write the admin token (mode 0600).
    #[arg(long)]
    pub out: PathBuf,
    /// The gateway's config file (for client_ca, admin_departments, issuer).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DeptCommand {
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        /// Region code it serves, or '*'; repeat for several.
        #[arg(long = "jurisdiction", required = true)]
        jurisdiction: Vec<String>,
    },
    /// Change a department's name and/or jurisdiction.
    Update {
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long = "jurisdiction")]
        jurisdiction: Vec<String>,
        #[arg(long)]
        reason: String,
    },
    List,
    Suspend {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    Resume {
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    Register {
        #[arg(long)]
        dept: String,
        /// PEM file: the client certificate, then any intermediates.
        #[arg(long)]
        pem: PathBuf,
    },
    List {
        #[arg(long, default_value = "")]
        dept: String,
    },
    /// Its calls fail from the next request on.
    Revoke {
        #[arg(long)]
        thumbprint: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    Issue {
        #[arg(long)]
        dept: String,
        /// The certificate the token is bound to: its thumbprint…
        #[arg(long, required_unless_present = "cert", conflicts_with = "cert")]
        thumbprint: Option<String>,
        /// …or its PEM file, whose thumbprint is computed here.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// The client system (`sub`).
        #[arg(long)]
        subject: String,
        /// puller, publisher, admin or auditor; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Lifetime in days (capped by the gateway's max_token_days; default: the cap).
        #[arg(long)]
        days: Option<u64>,
        /// Write the token to this file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    Revoke {
        #[arg(long)]
        jti: String,
        #[arg(long)]
        reason: String,
    },
    List {
        #[arg(long, default_value = "")]
        dept: String,
        /// Include expired tokens.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    Rotate {
        /// Stop verifying every older key at once: every token issued
        /// before is void (after a restore, or a leaked key).
        #[arg(long)]
        retire_previous: bool,
    },
}

/// The scope of a grant or an access request.
#[derive(Args, Debug)]
pub struct ScopeArgs {
    /// population, legal_entity or grid.
    #[arg(long)]
    dataset: String,
    /// FIELD=VIEW (CLEAR, MASKED, PSEUDONYM); repeat per field.
    #[arg(long = "field", required = true)]
    fields: Vec<String>,
    /// Region code prefix, or '*' for the whole jurisdiction; repeat for several.
    #[arg(long = "region", required = true)]
    regions: Vec<String>,
    /// Purpose code; repeat for several.
    #[arg(long = "purpose", required = true)]
    purposes: Vec<String>,
    /// get, batch_get, list; repeat (default: all three).
    #[arg(long = "op")]
    operations: Vec<String>,
    /// First day of validity (YYYY-MM-DD, local time).
    #[arg(long)]
    from: Option<NaiveDate>,
    /// Last day of validity (YYYY-MM-DD, inclusive, local time).
    #[arg(long)]
    until: Option<NaiveDate>,
    #[arg(long)]
    max_records_per_call: Option<u32>,
    #[arg(long)]
    max_records_per_day: Option<u64>,
    #[arg(long)]
    max_calls_per_minute: Option<u32>,
    /// Legal basis (required for conditional views, which become a request a second administrator decides).
    #[arg(long, default_value = "")]
    legal_basis: String,
}

#[derive(Subcommand, Debug)]
pub enum GrantCommand {
    Create {
        /// The department receiving the grant.
        #[arg(long)]
        dept: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    Revoke {
        #[arg(long)]
        id: String,
        #[arg(long)]
        reason: String,
    },
    List {
        #[arg(long, default_value = "")]
        dept: String,
        #[arg(long, default_value = "")]
        dataset: String,
        /// Include revoked grants.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RequestCommand {
    /// Submit a request for the calling identity's own department.
    Submit {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The business need, for the approver.
        #[arg(long)]
        justification: String,
    },
    List {
        /// pending, approved or rejected.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value = "")]
        dept: String,
    },
    Decide {
        #[arg(long)]
        id: String,
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        #[arg(long)]
        reject: bool,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// A scope's parts as the proto messages hold them.
struct Scope {
    operations: Vec<i32>,
    fields: Vec<FieldGrant>,
    not_before: Option<prost_types::Timestamp>,
    not_after: Option<prost_types::Timestamp>,
    limits: Option<GrantLimits>,
}

fn local_midnight(d: NaiveDate) -> Result<prost_types::Timestamp> {
    let t = Local
        .from_local_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
        .earliest()
        .with_context(|| format!("{d} has no local midnight"))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

impl ScopeArgs {
    fn parse(&self) -> Result<Scope> {
        let fields = self
            .fields
            .iter()
            .map(|f| {
                let (name, view) = f
                    .split_once('=')
                    .with_context(|| format!("--field {f}: write FIELD=VIEW, e.g. name=CLEAR"))?;
                let view = parse_view(view).with_context(|| {
                    format!("--field {f}: the view is CLEAR, MASKED or PSEUDONYM")
                })?;
                Ok(FieldGrant {
                    field: name.into(),
                    view: view.into(),
                })
            })
            .collect::<Result<_>>()?;
        let ops: Vec<&str> = if self.operations.is_empty() {
            vec!["get", "batch_get", "list"]
        } else {
            self.operations.iter().map(String::as_str).collect()
        };
        let operations = ops
            .iter()
            .map(|o| {
                Operation::from_str_name(&format!("OPERATION_{}", o.to_ascii_uppercase()))
                    .map(i32::from)
                    .with_context(|| format!("--op {o}: one of get, batch_get, list"))
            })
            .collect::<Result<_>>()?;
        let limits = (self.max_records_per_call.is_some()
            || self.max_records_per_day.is_some()
            || self.max_calls_per_minute.is_some())
        .then(|| GrantLimits {
            max_records_per_call: self.max_records_per_call.unwrap_or(0),
            max_records_per_day: self.max_records_per_day.unwrap_or(0),
            max_calls_per_minute: self.max_calls_per_minute.unwrap_or(0),
        });
        Ok(Scope {
            operations,
            fields,
            not_before: self.from.map(local_midnight).transpose()?,
            not_after: self
                .until
                .map(|d| local_midnight(d.succ_opt().unwrap_or(d)))
                .transpose()?,
            limits,
        })
    }
}

pub async fn run(args: AdminArgs) -> Result<()> {
    let out = Output {
        json: args.connect.json,
        quiet: args.connect.quiet,
    };
    if let AdminCommand::Bootstrap(b) = args.command {
        return super::bootstrap::run(b).await;
    }
    let client = args.connect.client("admin").await?;
    let mut admin = AdminServiceClient::new(client.channel.clone());
    match args.command {
        AdminCommand::Dept(DeptCommand::Create {
            id,
            name,
            jurisdiction,
        }) => {
            let d = admin
                .create_department(client.request(CreateDepartmentRequest {
                    id,
                    name,
                    jurisdiction,
                }))
                .await;
            out.departments(&[ok(d)?])
        }
        AdminCommand::Dept(DeptCommand::Update {
            id,
            name,
            jurisdiction,
            reason,
        }) => {
            let d = admin
                .update_department(client.request(UpdateDepartmentRequest {
                    id,
                    name,
                    jurisdiction,
                    reason,
                }))
                .await;
            out.departments(&[ok(d)?])
        }
        AdminCommand::Dept(DeptCommand::List) => {
            let l = ok(admin
                .list_departments(client.request(ListDepartmentsRequest {}))
                .await)?;
            if out.json {
                out.print_json(&l);
                return Ok(());
            }
            out.departments(&l.departments)
        }
        AdminCommand::Dept(DeptCommand::Suspend { id, reason }) => {
            let d = admin
                .suspend_department(client.request(SuspendDepartmentRequest {
                    id,
                    resume: false,
                    reason,
                }))
                .await;
            out.departments(&[ok(d)?])
        }
        AdminCommand::Dept(DeptCommand::Resume { id }) => {
            let d = admin
                .suspend_department(client.request(SuspendDepartmentRequest {
                    id,
                    resume: true,
                    reason: String::new(),
                }))
                .await;
            out.departments(&[ok(d)?])
        }
        AdminCommand::Cert(CertCommand::Register { dept, pem }) => {
            let certificate_pem = std::fs::read_to_string(&pem)
                .with_context(|| format!("reading {}", pem.display()))?;
            let c = ok(admin
                .register_certificate(client.request(RegisterCertificateRequest {
                    department: dept,
                    certificate_pem,
                }))
                .await)?;
            out.show(&c, &c.thumbprint, || {
                let mut t = Table::new(&["THUMBPRINT", "DEPARTMENT", "SUBJECT"]);
                t.row(vec![
                    c.thumbprint.clone(),
                    c.department.clone(),
                    c.subject.clone(),
                ]);
                t
            });
            Ok(())
        }
        AdminCommand::Token(TokenCommand::Issue {
            dept,
            thumbprint,
            cert,
            subject,
            roles,
            days,
            out: file,
        }) => {
            let certificate_thumbprint = match (thumbprint, cert) {
                (Some(t), _) => t,
                (None, Some(path)) => pem_thumbprint(&path)?,
                (None, None) => bail!("give --thumbprint or --cert"),
            };
            let t = ok(admin
                .issue_token(client.request(IssueTokenRequest {
                    department: dept,
                    certificate_thumbprint,
                    subject,
                    roles,
                    lifetime_seconds: days.map_or(0, |d| d.saturating_mul(86_400)),
                }))
                .await)?;
            let shown = match &file {
                Some(path) => {
                    govshare::base::files::write_secret_file(path, &t.token)?;
                    IssueTokenResponse {
                        token: format!("(written to {})", path.display()),
                        ..t.clone()
                    }
                }
                None => t.clone(),
            };
            out.show(&shown, &t.jti, || {
                let mut table = Table::new(&["JTI", "EXPIRES", "TOKEN"]);
                table.row(vec![
                    t.jti.clone(),
                    time(t.expires_at.as_ref()),
                    shown.token.clone(),
                ]);
                table
            });
            Ok(())
        }
        AdminCommand::Cert(CertCommand::List { dept }) => {
            let l = ok(admin
                .list_certificates(client.request(ListCertificatesRequest { department: dept }))
                .await)?;
            if out.json {
                out.print_json(&l);
                return Ok(());
            }
            out.certificates(&l.certificates)
        }
        AdminCommand::Cert(CertCommand::Revoke { thumbprint, reason }) => {
            let c = ok(admin
                .revoke_certificate(client.request(RevokeCertificateRequest { thumbprint, reason }))
                .await)?;
            out.certificates(&[c])
        }
        AdminCommand::Token(TokenCommand::List { dept, all }) => {
            let l = ok(admin
                .list_tokens(client.request(ListTokensRequest {
                    department: dept,
                    include_expired: all,
                }))
                .await)?;
            if out.json {
                out.print_json(&l);
                return Ok(());
            }
            out.each(
                &l.tokens,
                |t| &t.jti,
                || {
                    let mut t =
                        Table::new(&["JTI", "DEPARTMENT", "SUBJECT", "ROLES", "EXPIRES", "STATE"]);
                    for k in &l.tokens {
                        t.row(vec![
                            k.jti.clone(),
                            k.department.clone(),
                            k.subject.clone(),
                            k.roles.join(","),
                            time(k.expires_at.as_ref()),
                            if k.revoked { "revoked" } else { "active" }.into(),
                        ]);
                    }
                    t
                },
            );
            Ok(())
        }
        AdminCommand::Token(TokenCommand::Revoke { jti, reason }) => {
            ok(admin
                .revoke_token(client.request(RevokeTokenRequest {
                    jti: jti.clone(),
                    reason,
                }))
                .await)?;
            if !out.json {
                super::say(if out.quiet {
                    jti
                } else {
                    format!("revoked token {jti}")
                });
            } else {
                super::say(serde_json::json!({ "jti": jti, "revoked": true }));
            }
            Ok(())
        }
        AdminCommand::ConfirmRestore { note } => {
            let r = ok(admin
                .confirm_restore(client.request(ConfirmRestoreRequest { note }))
                .await)?;
            super::say(format!(
                "restore confirmed at {}: the gateway serves data again",
                time(r.confirmed_at.as_ref())
            ));
            Ok(())
        }
        AdminCommand::Key(KeyCommand::Rotate { retire_previous }) => {
            let mut k = ok(admin
                .rotate_signing_key(client.request(RotateSigningKeyRequest { retire_previous }))
                .await)?;
            if !k.replacement_token.is_empty() {
                // The identity's own token died with the rest: its
                // replacement goes where the old one was.
                let identity = args.connect.identity.as_deref().unwrap_or("admin");
                let path = args.connect.pki.join(format!("{identity}.token"));
                govshare::base::files::write_secret_file(&path, &k.replacement_token)?;
                eprintln!(
                    "every older token is void; this identity's new token is in {} (issue the others theirs with `govshare admin token issue`)",
                    path.display()
                );
                // Written to its file, never to standard output (or --json).
                k.replacement_token.clear();
            }
            out.show(&k, &k.kid, || {
                let mut t = Table::new(&["NEW KID"]);
                t.row(vec![k.kid.clone()]);
                t
            });
            Ok(())
        }
        AdminCommand::Grant(GrantCommand::Create { dept, scope }) => {
            let s = scope.parse()?;
            let g = ok(admin
                .create_grant(client.request(CreateGrantRequest {
                    grant: Some(Grant {
                        department: dept,
                        dataset: scope.dataset,
                        operations: s.operations,
                        fields: s.fields,
                        regions: scope.regions,
                        purposes: scope.purposes,
                        not_before: s.not_before,
                        not_after: s.not_after,
                        limits: s.limits,
                        legal_basis: scope.legal_basis,
                        ..Default::default()
                    }),
                }))
                .await)?;
            match (g.grant, g.pending_request) {
                (Some(g), _) => out.grants(&[g]),
                (None, Some(r)) => {
                    if !out.json && !out.quiet {
                        super::say(
                            "conditionally shared views: filed as an access request; an administrator of another department must decide it",
                        );
                    }
                    out.requests(&[r])
                }
                (None, None) => bail!("the gateway returned neither a grant nor a request"),
            }
        }
        AdminCommand::Grant(GrantCommand::Revoke { id, reason }) => {
            let g = ok(admin
                .revoke_grant(client.request(RevokeGrantRequest { id, reason }))
                .await)?;
            out.grants(&[g])
        }
        AdminCommand::Grant(GrantCommand::List { dept, dataset, all }) => {
            let l = ok(admin
                .list_grants(client.request(ListGrantsRequest {
                    department: dept,
                    dataset,
                    include_revoked: all,
                }))
                .await)?;
            if out.json {
                out.print_json(&l);
                return Ok(());
            }
            out.grants(&l.grants)
        }
        AdminCommand::Request(RequestCommand::Submit {
            scope,
            justification,
        }) => {
            let s = scope.parse()?;
            let a = ok(admin
                .submit_access_request(client.request(SubmitAccessRequestRequest {
                    request: Some(AccessRequest {
                        dataset: scope.dataset,
                        operations: s.operations,
                        fields: s.fields,
                        regions: scope.regions,
                        purposes: scope.purposes,
                        not_before: s.not_before,
                        not_after: s.not_after,
                        limits: s.limits,
                        justification,
                        legal_basis: scope.legal_basis,
                        ..Default::default()
                    }),
                }))
                .await)?;
            out.requests(&[a])
        }
        AdminCommand::Request(RequestCommand::List { status, dept }) => {
            let status = match status.as_deref() {
                None => 0,
                Some(s) => AccessRequestStatus::from_str_name(&format!(
                    "ACCESS_REQUEST_STATUS_{}",
                    s.to_ascii_uppercase()
                ))
                .with_context(|| format!("--status {s}: one of pending, approved, rejected"))?
                .into(),
            };
            let l = ok(admin
                .list_access_requests(client.request(ListAccessRequestsRequest {
                    status,
                    department: dept,
                }))
                .await)?;
            if out.json {
                out.print_json(&l);
                return Ok(());
            }
            out.requests(&l.requests)
        }
        AdminCommand::Request(RequestCommand::Decide {
            id,
            approve,
            reject: _,
            reason,
        }) => {
            let a = ok(admin
                .decide_access_request(client.request(DecideAccessRequestRequest {
                    id,
                    approve,
                    reason,
                }))
                .await)?;
            out.requests(&[a])
        }
        AdminCommand::Purpose(PurposeCommand::Register {
            code,
            name,
            legal_basis,
            departments,
        }) => {
            let p = ok(admin
                .register_purpose(client.request(RegisterPurposeRequest {
                    purpose: Some(Purpose {
                        code,
                        name,
                        legal_basis,
                        departments,
                        ..Default::default()
                    }),
                }))
                .await)?;
            out.purposes(&[p])
        }
        AdminCommand::Purpose(PurposeCommand::Retire { code, reason }) => {
            let p = ok(admin
                .retire_purpose(client.request(RetirePurposeRequest { code, reason }))
                .await)?;
            out.purposes(&[p])
        }
        AdminCommand::Purpose(PurposeCommand::List) => {
            let c = ok(admin
                .get_catalog(client.request(GetCatalogRequest {}))
                .await)?;
            out.purposes(&c.purposes)
        }
        AdminCommand::Bootstrap(_) => unreachable!("handled above"),
        AdminCommand::Catalog => {
            let c = ok(admin
                .get_catalog(client.request(GetCatalogRequest {}))
                .await)?;
            out.show(&c, "", || {
                let mut t = Table::new(&["DATASET", "FIELD", "SENSITIVITY", "VIEWS"]);
                for d in &c.datasets {
                    for f in &d.fields {
                        let views = f
                            .views
                            .iter()
                            .map(|v| format!("{}:{}", view_name(v.view), sharing_name(v.sharing)))
                            .collect::<Vec<_>>()
                            .join(" ");
                        t.row(vec![
                            d.name.clone(),
                            f.name.clone(),
                            enum_name(
                                Sensitivity::try_from(f.sensitivity)
                                    .ok()
                                    .map(|s| s.as_str_name()),
                                "SENSITIVITY_",
                            ),
                            views,
                        ]);
                    }
                }
                t
            });
            Ok(())
        }
    }
}

fn ok<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    r.map(tonic::Response::into_inner).map_err(status_error)
}

fn pem_thumbprint(path: &PathBuf) -> Result<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading a certificate from {}", path.display()))?;
    Ok(govshare::control::certs::thumbprint(&der))
}

fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.unwrap_or("?")
        .trim_start_matches(prefix)
        .to_ascii_lowercase()
}

fn view_name(v: i32) -> String {
    FieldView::try_from(v)
        .map(|v| {
            v.as_str_name()
                .trim_start_matches("FIELD_VIEW_")
                .to_string()
        })
        .unwrap_or_else(|_| "?".into())
}

fn sharing_name(s: i32) -> String {
    enum_name(
        SharingClass::try_from(s).ok().map(|s| s.as_str_name()),
        "SHARING_CLASS_",
    )
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| Local.timestamp_opt(t.seconds, 0).single())
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

/// A grant's fields, or their count when the list would swamp the table.
fn fields(f: &[FieldGrant]) -> String {
    let all = f
        .iter()
        .map(|f| format!("{}={}", f.field, view_name(f.view)))
        .collect::<Vec<_>>()
        .join(",");
    if all.len() > 60 {
        format!("{} fields (--json lists them)", f.len())
    } else {
        all
    }
}

struct Output {
    json: bool,
    quiet: bool,
}

impl Output {
    fn print_json<M: Named>(&self, m: &M) {
        super::say(serde_json::to_string_pretty(&json::to_value(m)).expect("JSON value"));
    }

    /// Prints one response as JSON, its id, or a table.
    fn show<M: Named>(&self, m: &M, id: &str, table: impl FnOnce() -> Table) {
        if self.json {
            self.print_json(m);
        } else if self.quiet {
            super::say(id);
        } else {
            table().print();
        }
    }

    fn each<M: Named>(&self, items: &[M], id: impl Fn(&M) -> &str, table: impl FnOnce() -> Table) {
        if self.json {
            items.iter().for_each(|m| self.print_json(m));
        } else if self.quiet {
            items.iter().for_each(|m| super::say(id(m)));
        } else {
            table().print();
        }
    }

    fn departments(&self, ds: &[Department]) -> Result<()> {
        self.each(
            ds,
            |d| &d.id,
            || {
                let mut t = Table::new(&["ID", "NAME", "STATUS", "JURISDICTION", "CREATED"]);
                for d in ds {
                    t.row(vec![
                        d.id.clone(),
                        d.name.clone(),
                        enum_name(
                            DepartmentStatus::try_from(d.status)
                                .ok()
                                .map(|s| s.as_str_name()),
                            "DEPARTMENT_STATUS_",
                        ),
                        d.jurisdiction.join(","),
                        time(d.created_at.as_ref()),
                    ]);
                }
                t
            },
        );
        Ok(())
    }

    fn certificates(&self, cs: &[RegisteredCertificate]) -> Result<()> {
        self.each(
            cs,
            |c| &c.thumbprint,
            || {
                let mut t =
                    Table::new(&["THUMBPRINT", "DEPARTMENT", "SUBJECT", "NOT AFTER", "STATE"]);
                for c in cs {
                    t.row(vec![
                        c.thumbprint.clone(),
                        c.department.clone(),
                        c.subject.clone(),
                        time(c.not_after.as_ref()),
                        if c.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                        .into(),
                    ]);
                }
                t
            },
        );
        Ok(())
    }

    fn purposes(&self, ps: &[Purpose]) -> Result<()> {
        self.each(
            ps,
            |p| &p.code,
            || {
                let mut t = Table::new(&["CODE", "NAME", "LEGAL BASIS", "DEPARTMENTS", "STATUS"]);
                for p in ps {
                    t.row(vec![
                        p.code.clone(),
                        p.name.clone(),
                        p.legal_basis.clone(),
                        if p.departments.is_empty() {
                            "any".into()
                        } else {
                            p.departments.join(",")
                        },
                        enum_name(
                            PurposeStatus::try_from(p.status)
                                .ok()
                                .map(|s| s.as_str_name()),
                            "PURPOSE_STATUS_",
                        ),
                    ]);
                }
                t
            },
        );
        Ok(())
    }

    fn grants(&self, gs: &[Grant]) -> Result<()> {
        self.each(
            gs,
            |g| &g.id,
            || {
                let mut t = Table::new(&[
                    "ID",
                    "DEPARTMENT",
                    "DATASET",
                    "FIELDS",
                    "REGIONS",
                    "PURPOSES",
                    "UNTIL",
                    "STATE",
                ]);
                for g in gs {
                    t.row(vec![
                        g.id.clone(),
                        g.department.clone(),
                        g.dataset.clone(),
                        fields(&g.fields),
                        g.regions.join(","),
                        g.purposes.join(","),
                        time(g.not_after.as_ref()),
                        if g.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "active"
                        }
                        .into(),
                    ]);
                }
                t
            },
        );
        Ok(())
    }

    fn requests(&self, rs: &[AccessRequest]) -> Result<()> {
        self.each(
            rs,
            |r| &r.id,
            || {
                let mut t = Table::new(&[
                    "ID",
                    "DEPARTMENT",
                    "DATASET",
                    "FIELDS",
                    "STATUS",
                    "RESPOND BY",
                    "GRANT",
                ]);
                for r in rs {
                    let mut status = enum_name(
                        AccessRequestStatus::try_from(r.status)
                            .ok()
                            .map(|s| s.as_str_name()),
                        "ACCESS_REQUEST_STATUS_",
                    );
                    if r.auto_approved {
                        status.push_str(" (auto)");
                    }
                    if r.overdue {
                        status.push_str(" OVERDUE");
                    }
                    t.row(vec![
                        r.id.clone(),
                        r.department.clone(),
                        r.dataset.clone(),
                        fields(&r.fields),
                        status,
                        time(r.respond_by.as_ref()),
                        r.grant_id.clone(),
                    ]);
                }
                t
            },
        );
        Ok(())
    }
}
