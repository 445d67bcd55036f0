//! What one request's log line says beyond the transport's view: the
//! department that made the call and its audit receipt. The transport guard
//! opens a scope per call; the pipeline notes into it as it learns them.

use std::cell::RefCell;
use std::future::Future;

#[derive(Debug, Default, Clone)]
pub struct Noted {
    pub department: Option<String>,
    pub receipt: Option<u64>,
}

tokio::task_local! {
    static CURRENT: RefCell<Noted>;
}

/// Runs `f` with a fresh record; returns its output and what was noted.
pub async fn scope<F: Future>(f: F) -> (F::Output, Noted) {
    CURRENT
        .scope(RefCell::new(Noted::default()), async move {
            let out = f.await;
            let noted = CURRENT.with(|c| c.take());
            (out, noted)
        })
        .await
}

/// Notes the calling department (no-op outside a request).
pub fn department(d: &str) {
    let _ = CURRENT.try_with(|c| c.borrow_mut().department = Some(d.to_string()));
}

/// Notes the call's audit receipt index (no-op outside a request).
pub fn receipt(index: u64) {
    let _ = CURRENT.try_with(|c| c.borrow_mut().receipt = Some(index));
}
