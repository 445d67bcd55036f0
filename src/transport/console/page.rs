//! The console's HTML: one layout, escaped text, two languages, SVG
//! charts drawn by the server. No inline script, no third-party origin.

use crate::proto::{AuditEntry, DepartmentDayStats};
use std::fmt::Write;

/// The page's language: from `?lang=`, else `Accept-Language`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn pick(query: Option<&str>, accept: Option<&str>) -> Self {
        match query {
            Some("zh") => return Self::Zh,
            Some("en") => return Self::En,
            _ => {}
        }
        let accept = accept.unwrap_or_default().to_ascii_lowercase();
        // The first language named that we have.
        for tag in accept.split(',') {
            let tag = tag.split(';').next().unwrap_or_default().trim();
            if tag.starts_with("zh") {
                return Self::Zh;
            }
            if tag.starts_with("en") {
                return Self::En;
            }
        }
        Self::Zh
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::Zh => "zh-CN",
            Self::En => "en",
        }
    }

    /// The other language, for the switch.
    fn other(self) -> (&'static str, &'static str) {
        match self {
            Self::Zh => ("en", "English"),
            Self::En => ("zh", "中文"),
        }
    }

    /// A phrase of the console in this language.
    pub fn t(self, key: &str) -> &'static str {
        let (zh, en) = match key {
            "title" => ("govshare 审计控制台", "govshare audit console"),
            "overview" => ("概览", "Overview"),
            "search" => ("检索", "Search"),
            "resident" => ("居民", "Resident"),
            "integrity" => ("完整性", "Integrity"),
            "live" => ("实时", "Live"),
            "signout" => ("退出", "Sign out"),
            "signin" => ("登录", "Sign in"),
            "token" => ("审计员令牌", "Auditor token"),
            "signin_help" => (
                "浏览器已出示您的审计员证书。请粘贴与该证书绑定的令牌（每个会话一次）。",
                "Your browser presented your auditor certificate. Paste the token bound to it (once per session).",
            ),
            "calls_per_day" => ("各部门每日调用次数", "Calls per department per day"),
            "denials" => ("按原因统计的拒绝", "Denials by reason"),
            "released" => ("释放的记录数", "Records released"),
            "flagged" => (
                "异常：当日调用量超过其14日中位数的3倍",
                "Flagged: a day above 3× the department's 14-day median",
            ),
            "none" => ("无", "none"),
            "department" => ("部门", "Department"),
            "day" => ("日期", "Day"),
            "calls" => ("调用", "Calls"),
            "records" => ("记录", "Records"),
            "reason" => ("原因", "Reason"),
            "count" => ("次数", "Count"),
            "dataset" => ("数据集", "Dataset"),
            "decision" => ("决定", "Decision"),
            "purpose" => ("用途", "Purpose"),
            "case_id" => ("案件编号", "Case id"),
            "subject" => ("身份证号或统一社会信用代码", "Citizen ID or credit code"),
            "from" => ("自", "From"),
            "to" => ("至", "To"),
            "find" => ("查找", "Find"),
            "index" => ("序号", "Index"),
            "time" => ("时间", "Time"),
            "kind" => ("类型", "Kind"),
            "method" => ("方法", "Method"),
            "next" => ("下一页", "Next page"),
            "csv" => ("导出 CSV", "Export CSV"),
            "export" => ("导出可验证日志", "Export the verifiable log"),
            "entry" => ("日志条目", "Log entry"),
            "proof" => ("包含证明", "Inclusion proof"),
            "checking" => ("正在本浏览器中验证…", "Checking in this browser…"),
            "log_key" => ("日志公钥", "Log key"),
            "checkpoint" => ("最新检查点", "Newest checkpoint"),
            "size" => ("条目数", "Entries"),
            "age" => ("距今", "Age"),
            "witnesses" => ("见证者", "Witnesses"),
            "scrub" => ("段校验", "Segment scrub"),
            "ok" => ("正常", "ok"),
            "damaged" => ("发现损坏", "damage found"),
            "save_checkpoint" => ("保存检查点", "Save the checkpoint"),
            "live_help" => (
                "新写入的日志条目（可按部门筛选）",
                "Entries as they are written (filter by department)",
            ),
            "allow" => ("允许", "allowed"),
            "deny" => ("拒绝", "refused"),
            "population" => ("人口", "population"),
            "legal_entity" => ("法人", "legal entities"),
            "grid" => ("网格", "grid"),
            "cosigned" => ("已联署", "cosigned"),
            "not_cosigned" => ("无联署", "no cosignature"),
            "any" => ("全部", "any"),
            "expired" => (
                "会话已过期，请重新登录。",
                "Your session expired: sign in again.",
            ),
            "not_auditor" => (
                "控制台仅向具有审计员角色的部门开放。",
                "The console is for departments with the auditor role only.",
            ),
            "csrf" => (
                "跨站请求被拒绝：表单缺少其令牌。",
                "Cross-site request refused: the form's token is missing.",
            ),
            "busy" => (
                "会话数已满，请稍后再试。",
                "Too many sessions are open; try again later.",
            ),
            _ => ("?", "?"),
        };
        match self {
            Self::Zh => zh,
            Self::En => en,
        }
    }
}

/// A denial reason as people read it, beside its code.
pub fn reason(lang: Lang, code: &str) -> String {
    let (zh, en) = match code {
        "PURPOSE_NOT_GRANTED" => ("用途未获授权", "purpose not granted"),
        "NO_GRANT" => ("无授权", "no grant"),
        "OUT_OF_SCOPE" => ("超出授权范围", "outside the granted scope"),
        "ROLE_NOT_GRANTED" => ("角色不符", "role not granted"),
        "OPERATION_NOT_GRANTED" => ("操作未获授权", "operation not granted"),
        "GRANT_NOT_YET_VALID" => ("授权尚未生效", "grant not yet valid"),
        "GRANT_EXPIRED" => ("授权已过期", "grant expired"),
        "GRANT_REVOKED" => ("授权已撤销", "grant revoked"),
        "CATALOG_WITHDRAWN" => ("目录已收回该字段", "withdrawn by the catalog"),
        "LIMIT_EXCEEDED" => ("超出限额", "limit exceeded"),
        "RESTORE_UNCONFIRMED" => ("恢复尚未确认", "restore not confirmed"),
        "LOG_BEHIND_WITNESS" => ("日志落后于见证者", "log behind its witnesses"),
        "BAD_TOKEN" => ("令牌无效", "bad token"),
        "TOKEN_REVOKED" => ("令牌已撤销", "token revoked"),
        "DEPARTMENT_SUSPENDED" => ("部门已暂停", "department suspended"),
        "CSRF" => ("跨站请求", "cross-site request"),
        "SESSION_EXPIRED" => ("会话已过期", "session expired"),
        _ => return esc(code),
    };
    let label = match lang {
        Lang::Zh => zh,
        Lang::En => en,
    };
    format!("{label} <code>{}</code>", esc(code))
}

/// Text for HTML (element content and quoted attributes).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: navigation, the switch of language, `body`.
pub fn layout(lang: Lang, title: &str, signed_in: Option<&str>, body: &str) -> String {
    let mut nav = String::new();
    if let Some(csrf) = signed_in {
        for (href, key) in [
            ("/overview", "overview"),
            ("/search", "search"),
            ("/resident", "resident"),
            ("/integrity", "integrity"),
            ("/live", "live"),
        ] {
            let _ = write!(nav, r#"<a href="{href}">{}</a> "#, lang.t(key));
        }
        let _ = write!(
            nav,
            r#"<form method="post" action="/signout" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit">{}</button></form>"#,
            esc(csrf),
            lang.t("signout")
        );
    }
    let (other, other_name) = lang.other();
    format!(
        r#"<!doctype html>
<html lang="{code}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — {app}</title>
<link rel="stylesheet" href="/assets/console.css">
<script src="/assets/console.js" defer></script>
</head>
<body>
<header><strong>{app}</strong> <nav aria-label="{app}">{nav}</nav> <a href="?lang={other}" lang="{other}">{other_name}</a></header>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        code = lang.code(),
        app = lang.t("title"),
        title = esc(title),
    )
}

/// Calls per day of each department as a bar chart (one bar per day).
pub fn chart(rows: &[DepartmentDayStats], lang: Lang) -> String {
    let days: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.day.as_str()).collect();
    let days: Vec<&str> = days.into_iter().collect();
    let depts: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.department.as_str()).collect();
    let max = rows.iter().map(|r| r.calls).max().unwrap_or(1).max(1) as f64;
    let (bar, gap, height) = (10.0, 2.0, 60.0);
    let width = (days.len() as f64 * (bar + gap)).max(bar);
    let mut out = String::new();
    for d in depts {
        let _ = write!(
            out,
            r#"<figure><figcaption>{}</figcaption><svg role="img" aria-label="{} {}" width="{width}" height="{h}" viewBox="0 0 {width} {h}">"#,
            esc(d),
            esc(d),
            lang.t("calls_per_day"),
            h = height + 2.0
        );
        for (i, day) in days.iter().enumerate() {
            let calls = rows
                .iter()
                .find(|r| r.department == d && r.day == *day)
                .map_or(0, |r| r.calls);
            let h = (calls as f64 / max * height).max(if calls > 0 { 1.0 } else { 0.0 });
            let _ = write!(
                out,
                r#"<rect x="{x}" y="{y}" width="{bar}" height="{h}" data-day="{day}" data-calls="{calls}"><title>{day}: {calls}</title></rect>"#,
                x = i as f64 * (bar + gap),
                y = height - h + 1.0,
                day = esc(day),
            );
        }
        out.push_str("</svg></figure>");
    }
    out
}

/// Departments whose day is more than three times their trailing 14-day
/// median (and at least 100 calls): `(department, day, calls, median)`.
/// The median is over calendar days — a day without calls counts as 0 —
/// so only days with 14 days of history from `first_day` on are judged.
pub fn flagged(
    rows: &[DepartmentDayStats],
    first_day: chrono::NaiveDate,
) -> Vec<(String, String, u64, u64)> {
    use chrono::NaiveDate;
    let mut calls: std::collections::BTreeMap<(&str, NaiveDate), u64> = Default::default();
    for r in rows {
        if let Ok(d) = NaiveDate::parse_from_str(&r.day, "%Y-%m-%d") {
            *calls.entry((r.department.as_str(), d)).or_default() += r.calls;
        }
    }
    let mut out = Vec::new();
    for (&(dept, day), &n) in &calls {
        if n < 100 || day < first_day + chrono::Days::new(14) {
            continue;
        }
        let mut before: Vec<u64> = (1..=14u64)
            .map(|k| {
                calls
                    .get(&(dept, day - chrono::Days::new(k)))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        before.sort_unstable();
        let median = before[before.len() / 2];
        if n > 3 * median {
            out.push((
                dept.to_string(),
                day.format("%Y-%m-%d").to_string(),
                n,
                median,
            ));
        }
    }
    out
}

/// One row of a table of entries, linking to the entry.
pub fn entry_row(e: &AuditEntry, lang: Lang) -> String {
    let p = e.principal.clone().unwrap_or_default();
    let time = crate::base::clock::local_display(e.time.as_ref());
    let decision = if e.decision == crate::proto::AuditDecision::Deny as i32 {
        lang.t("deny")
    } else {
        lang.t("allow")
    };
    format!(
        r#"<tr><td><a href="/entry/{i}">{i}</a></td><td>{time}</td><td>{kind}</td><td>{dept}</td><td>{method}</td><td>{dataset}</td><td>{decision}</td><td>{reason}</td><td>{purpose}</td><td>{case}</td></tr>"#,
        i = e.index,
        kind = esc(crate::audit::kind_name(e.kind)),
        dept = esc(&p.department),
        method = esc(&crate::audit::method_label(&e.method)),
        dataset = match e.dataset.as_str() {
            d @ ("population" | "legal_entity" | "grid") => lang.t(d).to_string(),
            d => esc(d),
        },
        reason = reason(lang, &e.reason_code),
        purpose = esc(&e.purpose),
        case = esc(&e.case_id),
    )
}

/// The header of [`entry_row`]'s table.
pub fn entry_head(lang: Lang) -> String {
    let mut s = String::from("<tr>");
    for k in [
        "index",
        "time",
        "kind",
        "department",
        "method",
        "dataset",
        "decision",
        "reason",
        "purpose",
        "case_id",
    ] {
        let _ = write!(s, r#"<th scope="col">{}</th>"#, lang.t(k));
    }
    s.push_str("</tr>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_languages_follow_the_browser() {
        assert_eq!(
            esc(r#"<script>"x"&'y'"#),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
        assert_eq!(Lang::pick(None, Some("en-US,en;q=0.9")), Lang::En);
        assert_eq!(Lang::pick(None, Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::Zh);
        assert_eq!(Lang::pick(Some("en"), Some("zh-CN")), Lang::En);
        assert_eq!(Lang::pick(None, None), Lang::Zh);
    }

    #[test]
    fn a_day_three_times_the_median_is_flagged() {
        let first = chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let row = |day: u32, calls: u64| DepartmentDayStats {
            department: "a".into(),
            day: format!("2026-11-{day:02}"),
            calls,
            ..Default::default()
        };
        let mut rows: Vec<_> = (1..=14).map(|d| row(d, 100)).collect();
        rows.push(row(15, 301));
        assert_eq!(
            flagged(&rows, first),
            vec![("a".into(), "2026-11-15".into(), 301, 100)]
        );
        rows.last_mut().unwrap().calls = 300;
        assert!(flagged(&rows, first).is_empty());
        // Quiet days count as quiet: a burst after silence is flagged.
        assert_eq!(
            flagged(&[row(20, 10_000)], first),
            vec![("a".into(), "2026-11-20".into(), 10_000, 0)]
        );
        // …but not before 14 days of history are loaded.
        assert!(flagged(&[row(10, 10_000)], first).is_empty());
    }
}
