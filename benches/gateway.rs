//! `cargo bench`: `govshare bench` with shorter runs (the full harness is
//! `cargo run --release -- bench`). Measurements, not assertions.

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs this binary too: measure only under
    // `cargo bench`, which passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("gateway benchmark: run it with `cargo bench`");
        return Ok(());
    }
    let options = govshare::bench::Options {
        binary: env!("CARGO_BIN_EXE_govshare").into(),
        persons: 20_000,
        duration: std::time::Duration::from_secs(3),
        concurrency: vec![1, 32, 128],
        connections: 4,
        api: govshare::bench::Api::V2,
        log_entries: 100_000,
        start_persons: 0,
        only: Vec::new(),
        postgres: None,
    };
    let report = tokio::runtime::Runtime::new()?.block_on(govshare::bench::run(&options))?;
    println!("{}", report.table());
    Ok(())
}
