//! The gateway's log lines on their way to stderr: gathered in memory and
//! written by one thread at most every [`FLUSH_EVERY`], not woken for
//! each line.
//!
//! Why not a channel whose reader wakes per line (`tracing-appender`'s
//! non-blocking writer, used before): under a pull load the log thread
//! caught up between lines and slept, so a request's thread woke it again
//! — a futex wake-up, on a VM an interrupt to the other core — about 680
//! times a second at 24 000 pulls/s, and the wake alone was 1.8 % of the
//! workers' samples (`perf`, `govshare bench --only unary`). Here a line
//! is appended under a mutex. An idle writer sleeps until a first line
//! comes; then it gathers for [`FLUSH_EVERY`] (less once [`HIGH_WATER`]
//! bytes wait) and writes them all: under load one wake-up per batch,
//! none while nothing is logged.
//!
//! Bounded, and lossless while stderr takes what it is given: past
//! [`CAP`] waiting bytes a caller waits for the writer (a flood of log
//! lines slows requests rather than grow memory or drop lines). Dropping
//! the [`Flusher`] writes what is left, waiting at most [`EXIT_WAIT`] for
//! a stderr that does not take it (a stalled pipe must not hold the exit
//! for ever). A line logged after that, or by a caller still waiting at
//! the cap then, is discarded.

use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a first line waits for others before they are written: short
/// beside anything an operator watches for, long beside the gaps between
/// lines under load.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Bytes that cut the gathering short.
pub const HIGH_WATER: usize = 256 * 1024;
/// Bytes past which a caller waits for the writer.
pub const CAP: usize = 4 * 1024 * 1024;
/// How long the exit waits for the last lines to be written.
pub const EXIT_WAIT: Duration = Duration::from_secs(1);

/// The writing end: a [`tracing_subscriber::fmt::MakeWriter`]. Each log
/// event is formatted whole and handed over in one `write`, so lines from
/// several threads never interleave.
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

/// Owns the writer thread; dropping it writes the lines handed over
/// before (within [`EXIT_WAIT`]), then stops the thread.
pub struct Flusher {
    shared: Arc<Shared>,
    /// Disconnected when the writer thread has returned.
    finished: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits here for a first line, high water, or the end.
    wake: Condvar,
    /// Callers past the cap wait here for the writer to take the lines.
    taken: Condvar,
    high_water: usize,
    cap: usize,
}

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    /// The writer sleeps until a line comes (set by it, cleared by the
    /// line that wakes it).
    idle: bool,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only whole lines behind
        // (a line is appended in one `extend`): carry on with them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits on `condvar`, carrying on past a poisoned lock (above).
    fn wait<'a>(
        &self,
        condvar: &Condvar,
        state: MutexGuard<'a, State>,
        at_most: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        match at_most {
            Some(d) => condvar
                .wait_timeout(state, d)
                .map(|(state, _)| state)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0),
            None => condvar
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }
}

/// Starts the writer thread (named `log-writer`) over `out`.
pub fn spawn(out: impl Write + Send + 'static) -> io::Result<(LogSink, Flusher)> {
    spawn_with(out, FLUSH_EVERY, CAP)
}

fn spawn_with(
    mut out: impl Write + Send + 'static,
    every: Duration,
    cap: usize,
) -> io::Result<(LogSink, Flusher)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        taken: Condvar::new(),
        high_water: HIGH_WATER.min(cap),
        cap,
    });
    let theirs = shared.clone();
    let (finishing, finished) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let _finishing = finishing;
            let mut batch = Vec::new();
            loop {
                let closed = {
                    let mut state = theirs.lock();
                    if state.lines.is_empty() && !state.closed {
                        state.idle = true;
                        while state.idle && !state.closed {
                            state = theirs.wait(&theirs.wake, state, None);
                        }
                    }
                    if !state.closed && state.lines.len() < theirs.high_water {
                        state = theirs.wait(&theirs.wake, state, Some(every));
                    }
                    std::mem::swap(&mut state.lines, &mut batch);
                    state.closed
                };
                theirs.taken.notify_all();
                if !batch.is_empty() {
                    // Nowhere to report a failing stderr: the lines are
                    // dropped, as a terminal that went away drops them.
                    let _ = out.write_all(&batch).and_then(|()| out.flush());
                    batch.clear();
                }
                if closed {
                    return;
                }
            }
        })?;
    Ok((
        LogSink {
            shared: shared.clone(),
        },
        Flusher {
            shared,
            finished,
            thread: Some(thread),
        },
    ))
}

impl Write for &LogSink {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &self.shared;
        let mut state = shared.lock();
        while state.lines.len() >= shared.cap && !state.closed {
            state = shared.wait(&shared.taken, state, None);
        }
        if state.closed {
            return Ok(line.len());
        }
        let before = state.lines.len();
        state.lines.extend_from_slice(line);
        if state.idle {
            state.idle = false;
            shared.wake.notify_one();
        } else if before < shared.high_water && state.lines.len() >= shared.high_water {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = &'a LogSink;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.shared.taken.notify_all();
        // Disconnected once the thread has returned; a writer still stuck
        // in stderr after EXIT_WAIT is left behind with the process.
        if let (Err(mpsc::RecvTimeoutError::Disconnected), Some(thread)) =
            (self.finished.recv_timeout(EXIT_WAIT), self.thread.take())
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// Collects what the writer writes, and tells each write.
    #[derive(Clone)]
    struct Out {
        written: Arc<Mutex<Vec<u8>>>,
        writes: mpsc::SyncSender<()>,
        /// While held, the writer blocks inside `write`.
        stall: Arc<Mutex<()>>,
    }

    impl Write for Out {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            drop(self.stall.lock().unwrap_or_else(|p| p.into_inner()));
            self.written.lock().unwrap().extend_from_slice(bytes);
            let _ = self.writes.try_send(());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn out() -> (Out, mpsc::Receiver<()>) {
        let (writes, told) = mpsc::sync_channel(1024);
        let out = Out {
            written: Arc::default(),
            writes,
            stall: Arc::default(),
        };
        (out, told)
    }

    /// Waits, at most 10 s, until `done` holds.
    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A thread that writes `line` a thousand times.
    fn caller(sink: &LogSink, line: &[u8]) -> std::thread::JoinHandle<()> {
        let (sink, line) = (sink.clone(), line.to_vec());
        std::thread::spawn(move || {
            for _ in 0..1_000 {
                (&sink).write_all(&line).unwrap();
            }
        })
    }

    const SMALL_CAP: usize = 4096;

    /// A sink whose writer gathers for 1 ms and whose callers wait past
    /// [`SMALL_CAP`].
    fn small() -> (Out, LogSink, Flusher) {
        let (out, _told) = out();
        let (sink, flusher) = spawn_with(out.clone(), Duration::from_millis(1), SMALL_CAP).unwrap();
        (out, sink, flusher)
    }

    /// A line of 100 bytes.
    const LINE: &[u8; 100] = &{
        let mut line = [b'x'; 100];
        line[99] = b'\n';
        line
    };

    #[test]
    fn lines_from_many_threads_all_arrive_whole_and_in_each_threads_order() {
        let (out, _told) = out();
        let (sink, flusher) = spawn(out.clone()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let sink = sink.clone();
                s.spawn(move || {
                    for n in 0..2_000 {
                        let line = format!("thread {t} line {n} {}\n", "x".repeat(n % 97));
                        (&sink).write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(flusher);
        let written = String::from_utf8(out.written.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in written.lines() {
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("thread"), "a torn line: {line:?}");
            let t: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some("line"));
            let n: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(n, next[t], "thread {t}'s lines out of order");
            assert_eq!(words.next().unwrap().len(), n % 97, "a torn line: {line:?}");
            next[t] += 1;
        }
        assert_eq!(
            next, [2_000; 4],
            "every line written before the end arrives"
        );
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let (out, told) = out();
        let (sink, _flusher) = spawn(out.clone()).unwrap();
        // The line comes to a writer asleep with nothing to write.
        until("the writer never went idle", || sink.shared.lock().idle);
        (&sink).write_all(b"listening on 127.0.0.1:1\n").unwrap();
        told.recv_timeout(Duration::from_secs(10))
            .expect("the writer wrote the line on its own");
        assert_eq!(&*out.written.lock().unwrap(), b"listening on 127.0.0.1:1\n");
    }

    #[test]
    fn a_stalled_stderr_makes_callers_wait_rather_than_grow_memory_or_drop_lines() {
        let (out, sink, flusher) = small();
        // Declared after the flusher, so a failing assertion releases the
        // writer before the flusher's drop waits for it.
        let stall = out.stall.lock().unwrap();
        // The writer takes a first batch and blocks writing it.
        (&sink).write_all(LINE).unwrap();
        until("the writer never took its batch", || {
            sink.shared.lock().lines.is_empty()
        });
        let caller = caller(&sink, LINE);
        // The caller gets as far as the cap, then waits.
        until("the caller stopped early", || {
            sink.shared.lock().lines.len() >= SMALL_CAP
        });
        std::thread::sleep(Duration::from_millis(100));
        let waiting = sink.shared.lock().lines.len();
        assert!(
            waiting < SMALL_CAP + LINE.len(),
            "grew past the cap: {waiting} bytes"
        );
        assert!(!caller.is_finished(), "the caller never waited");
        drop(stall);
        caller.join().unwrap();
        drop(flusher);
        assert_eq!(out.written.lock().unwrap().len(), 1_001 * LINE.len());
    }

    #[test]
    fn an_exit_waits_a_bounded_time_for_a_stalled_stderr_and_frees_waiting_callers() {
        let (out, sink, flusher) = small();
        let stall = out.stall.lock().unwrap();
        let caller = caller(&sink, LINE);
        until("the caller never reached the cap", || {
            sink.shared.lock().lines.len() >= SMALL_CAP
        });
        let (dropped, told) = mpsc::channel();
        std::thread::spawn(move || {
            drop(flusher);
            dropped.send(()).unwrap();
        });
        told.recv_timeout(EXIT_WAIT + Duration::from_secs(10))
            .expect("the exit waited for the stalled stderr without bound");
        caller.join().expect("the waiting caller was let go");
        drop(stall);
    }
}
